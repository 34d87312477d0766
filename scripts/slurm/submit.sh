#!/usr/bin/env bash
# Runs a scenario's sweep across a Slurm cluster: one array task per shard (a whole node each), then
# a dependent job that merges the shard files and writes the report.
#   scripts/slurm/submit.sh S.yaml [options] [-- extra run_lab_harness args]
#     --shards N        slices of the sweep (default: --nodes, else 4); array task I runs shard I/N
#     --nodes N         run at most N shards at once (array throttle); default: no limit
#     --only 2,4        submit just these shard indices into an existing --out DIR (re-run missing or
#                       failed shards; a shard file already there is continued with --resume)
#     --out DIR         results dir (default results/fleet/<scenario>-<YYYYmmdd-HHMMSS>; with --only,
#                       the newest such dir holding shard-*-of-N.json files)
#     --partition P     Slurm partition (default: the cluster's default)
#     --time HH:MM:SS   time limit per shard (default: the partition's)
#     --profile P       hardware profile passed to run_lab_harness
#     --sbatch-arg ARG  one more sbatch option for every job, repeatable (--gres=gpu:1, --account=A,
#                       --constraint=nvme); shards get --exclusive --mem=0: the whole node and its memory
#     --allow-mixed-revisions  let the merge combine shards built from different git revisions
#     --dry-run         print the sbatch commands, submit nothing
# Writes DIR/shard-I-of-N.json per shard, DIR/merged.json, DIR/report/report.md, logs in DIR/logs/.
# Needs the repo and DIR on storage every node sees, and a build there (build/bin/run_lab_harness,
# or FLEA_BUILD_DIR). The environment goes with the jobs (SLURM_CONF, FLEA_CACHE_DIR, ...).
# Exit: 0 submitted (or printed), 2 bad input or sbatch refused.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)

usage() { sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; }
die() { echo "submit: $*" >&2; exit 2; }
is_count() { [[ $1 =~ ^[1-9][0-9]*$ ]]; }

scenario="" partition="" nodes="" shards="" only="" out="" time_limit="" profile="" dry_run=0
extra=() merge_args=() sbatch_extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --dry-run) dry_run=1; shift ;;
    --allow-mixed-revisions) merge_args=(--allow-mixed-revisions); shift ;;
    --sbatch-arg) [ $# -ge 2 ] && [ -n "$2" ] || die "--sbatch-arg needs a value"; sbatch_extra+=("$2"); shift 2 ;;
    --sbatch-arg=*) sbatch_extra+=("${1#*=}"); shift ;;
    --partition|--nodes|--shards|--only|--out|--time|--profile)
      [ $# -ge 2 ] && [ -n "$2" ] || die "$1 needs a value (try --help)"
      case "$1" in
        --partition) partition=$2 ;; --nodes) nodes=$2 ;; --shards) shards=$2 ;; --only) only=$2 ;;
        --out) out=$2 ;; --time) time_limit=$2 ;; --profile) profile=$2 ;;
      esac
      shift 2 ;;
    --) shift; extra=("$@"); break ;;
    -*) die "unknown option '$1' (try --help)" ;;
    *) [ -z "$scenario" ] || die "one scenario only (got '$scenario' and '$1')"; scenario=$1; shift ;;
  esac
done

[ -n "$scenario" ] || die "no scenario given: submit.sh S.yaml [options] (try --help)"
[ -f "$scenario" ] || die "scenario not found: $scenario"
scenario=$(cd "$(dirname "$scenario")" && pwd)/$(basename "$scenario")
[ -z "$nodes" ] || is_count "$nodes" || die "--nodes must be a positive integer, got '$nodes'"
[ -z "$shards" ] || is_count "$shards" || die "--shards must be a positive integer, got '$shards'"
shards=${shards:-${nodes:-4}}
[ -z "$time_limit" ] || [[ $time_limit =~ ^([0-9]+-)?[0-9]+(:[0-9]{1,2}){0,2}$ ]] ||
  die "--time must look like HH:MM:SS (or D-HH:MM:SS, MM), got '$time_limit'"

# Array indices = shard indices, 1-based.
indices=()
if [ -n "$only" ]; then
  IFS=',' read -r -a parts <<<"$only"
  for p in "${parts[@]}"; do
    is_count "$p" || die "--only: '$p' is not a shard index (want a comma list like 2,4)"
    [ "$p" -le "$shards" ] || die "--only: shard $p is outside 1..$shards (--shards $shards)"
    for q in "${indices[@]}"; do [ "$q" != "$p" ] || die "--only: shard $p given twice"; done
    indices+=("$p")
  done
  [ ${#indices[@]} -gt 0 ] || die "--only needs at least one shard index"
  array_spec=$(IFS=,; echo "${indices[*]}")
else
  array_spec="1-$shards"
fi
[ -z "$nodes" ] || array_spec="$array_spec%$nodes"

name=$(basename "$scenario"); name=${name%.yaml}; name=${name%.yml}
if [ -z "$out" ] && [ -n "$only" ]; then
  # A re-run goes into the earlier submission's dir: without --out, the newest one of this scenario
  # and shard count (the command `run_lab_harness merge` prints has no --out).
  for d in $(ls -1d results/fleet/"$name"-*/ 2>/dev/null | sort -r); do
    if ls "$d"/shard-*-of-"$shards".json "$d"/logs >/dev/null 2>&1; then out=${d%/}; break; fi
  done
  [ -n "$out" ] || die "--only re-runs shards of an earlier submission: give its --out DIR" \
                       "(no results/fleet/$name-*/ with $shards-shard files here)"
  echo "submit: --only without --out: using the newest earlier run, $out"
fi
[ -n "$out" ] || out=results/fleet/$name-$(date +%Y%m%d-%H%M%S)
[[ $out = /* ]] || out=$(pwd)/$out
[ "$dry_run" -eq 1 ] || mkdir -p "$out/logs" || die "cannot create --out $out"

build=${FLEA_BUILD_DIR:-$repo/build}
[[ $build = /* ]] || build=$(pwd)/$build
harness=$build/bin/run_lab_harness

if [ "$dry_run" -eq 0 ]; then
  command -v sbatch >/dev/null ||
    die "sbatch not found: this needs a Slurm cluster (client tools: apt-get install slurm-wlm munge;" \
        "to try it on one machine: scripts/slurm/local_cluster.sh start)"
  [ -x "$harness" ] || die "$harness not found: build first (scripts/setup.sh --build) or set FLEA_BUILD_DIR"
fi
# Catch a bad scenario here rather than in N jobs: the harness checks it without running anything.
prof_args=()
[ -z "$profile" ] || prof_args=(--profile "$profile")
if [ -x "$harness" ]; then
  if ! check=$("$harness" --config "$scenario" "${prof_args[@]}" --shard "1/$shards" --dry-run -q 2>&1 >/dev/null); then
    die "run_lab_harness rejects the scenario: ${check:-no message}"
  fi
fi

sb_common=()
[ -z "$partition" ] || sb_common+=(--partition="$partition")
sb_common+=("${sbatch_extra[@]}")
shard_cmd=(sbatch --parsable --job-name="flea-$name" --array="$array_spec" --exclusive --mem=0 --nodes=1 --ntasks=1
           "${sb_common[@]}")
[ -z "$time_limit" ] || shard_cmd+=(--time="$time_limit")
shard_cmd+=(--output="$out/logs/shard-%a-of-$shards.%A.out"
            "$here/shard.sbatch" "$repo" "$build" "$scenario" "$shards" "$out" "$profile" "${extra[@]}")
merge_cmd=(sbatch --parsable --job-name="flea-$name-merge" --nodes=1 --ntasks=1 "${sb_common[@]}"
           --output="$out/logs/merge.%j.out" --dependency="afterany:ARRAY_JOB_ID"
           "$here/merge.sbatch" "$repo" "$build" "$scenario" "$shards" "$out" "${merge_args[@]}")

if [ "$dry_run" -eq 1 ]; then
  echo "# shards $array_spec of $shards -> $out"
  if [ -x "$harness" ]; then  # the slicing each array task will run
    for ((i = 1; i <= shards; i++)); do
      "$harness" --config "$scenario" "${prof_args[@]}" --shard "$i/$shards" --dry-run -q 2>/dev/null |
        grep '^shard ' | sed 's/^/# /' || true
    done
  fi
  printf '%q ' "${shard_cmd[@]}"; echo
  printf '%q ' "${merge_cmd[@]}" | sed 's/ARRAY_JOB_ID/<array-job-id>/'; echo
  exit 0
fi

if ! jid=$("${shard_cmd[@]}"); then
  hint=""
  [ -n "${SLURM_CONF:-}" ] || [ -f /etc/slurm/slurm.conf ] ||
    hint="; no SLURM_CONF and no /etc/slurm/slurm.conf: submit from the cluster's login node, or start a
  one-machine test cluster with scripts/slurm/local_cluster.sh start and run the export line it prints"
  die "sbatch refused the shard array (see its message above)$hint"
fi
jid=${jid%%;*}  # --parsable prints "id" or "id;cluster"
merge_cmd=("${merge_cmd[@]/ARRAY_JOB_ID/$jid}")
if ! mid=$("${merge_cmd[@]}"); then
  die "shard array $jid submitted, but sbatch refused the merge job (merge by hand: $harness merge $out/shard-*-of-$shards.json --out $out/merged.json)"
fi
mid=${mid%%;*}
echo "scenario $scenario: shards $array_spec of $shards"
echo "shard array job $jid   (squeue -j $jid; logs $out/logs/shard-<I>-of-$shards.$jid.out)"
echo "merge job       $mid   (runs after the array ends; log $out/logs/merge.$mid.out)"
echo "shard results   $out/shard-<I>-of-$shards.json"
echo "merged          $out/merged.json"
echo "report          $out/report/report.md"
