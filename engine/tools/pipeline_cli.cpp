#include "pipeline_cli.h"

#include <cstdio>
#include <algorithm>
#include <cstring>
#include <thread>

#include "commands.h"
#include "pipeline/split.h"

namespace flea::cli {
namespace {

// What each rank tells the others after each setup phase (a fixed size for MPI_Allgather).
struct RankReport {
  int32_t ok = 1;
  int32_t exit_code = 0;
  int64_t n_layer = 0;
  uint64_t layer_bytes = 0;  // sum over layers: ranks must agree on the model
  uint64_t budget_bytes = 0;
  char message[480] = {};
};

RankReport failure(const Status& st, int exit_code) {
  RankReport r;
  r.ok = 0;
  r.exit_code = exit_code;
  std::snprintf(r.message, sizeof(r.message), "%s", st.message().c_str());
  return r;
}

// All ranks' reports; when one failed, rank 0 prints the first failure and every rank gets its
// exit code (the failing rank's own, the others kExitFailure).
int exchange(const char* command, pipeline::Comm* comm, const RankReport& mine, std::vector<RankReport>* all) {
  std::vector<char> raw;
  if (Status st = comm->all_gather(&mine, sizeof(mine), &raw); !st.ok()) return report_error(command, st, kExitFailure);
  all->resize(static_cast<size_t>(comm->size()));
  std::memcpy(all->data(), raw.data(), raw.size());
  for (int r = 0; r < comm->size(); ++r) {
    const RankReport& rep = (*all)[static_cast<size_t>(r)];
    if (rep.ok) continue;
    if (comm->rank() == 0) {
      std::fprintf(stderr, "flea %s: pipeline rank %d of %d: %s\n", command, r, comm->size(), rep.message);
    }
    return comm->rank() == r ? rep.exit_code : kExitFailure;
  }
  return -1;
}

// One rank's figures at the end (a fixed size for MPI_Allgather).
struct RankFigures {
  int32_t layer_begin = 0, layer_end = 0;
  pipeline::StageStats stage;
  uint64_t read_bytes = 0;  // by its weight provider, start-up included
};

StatusOr<nlohmann::json> gather_figures(Pipeline* p) {
  RankFigures mine;
  const LayerSlice& sl = p->split[static_cast<size_t>(p->comm->rank())];
  mine.layer_begin = sl.begin;
  mine.layer_end = sl.end;
  mine.stage = p->evaluator ? p->evaluator->stage_stats() : p->stats;
  mine.read_bytes = p->engine.telemetry ? p->engine.telemetry->read_bytes() : 0;
  std::vector<char> raw;
  FLEA_RETURN_IF_ERROR(p->comm->all_gather(&mine, sizeof(mine), &raw));
  nlohmann::json ranks = nlohmann::json::array();
  for (int r = 0; r < p->comm->size(); ++r) {
    RankFigures f;
    std::memcpy(&f, raw.data() + static_cast<size_t>(r) * sizeof(f), sizeof(f));
    ranks.push_back({{"rank", r}, {"layer_begin", f.layer_begin}, {"layer_end", f.layer_end}, {"steps", f.stage.steps},
                     {"compute_ns", f.stage.compute_ns}, {"wait_ns", f.stage.wait_ns}, {"send_ns", f.stage.send_ns},
                     {"sent_bytes", f.stage.sent_bytes}, {"read_bytes", f.read_bytes}});
  }
  return ranks;
}

}  // namespace

void add_pipeline_flag(CLI::App& app, bool* pipeline) {
  app.add_flag("--pipeline", *pipeline,
               "run as one rank of `mpirun -np N flea ... --pipeline`: the layers are split over the ranks "
               "(by --ram-budget-mb when every rank has one, else by bytes), rank 0 writes the output");
}

int open_pipeline(const char* command, const EngineOptions& opts, int64_t n_ctx, Pipeline* p) {
  StatusOr<std::unique_ptr<pipeline::Comm>> comm = pipeline::open_mpi_comm();
  if (!comm.ok()) return report_error(command, comm.status(), kExitUsage);
  p->comm = std::move(*comm);
  pipeline::Comm* c = p->comm.get();
  std::vector<RankReport> all;

  // Phase 1: every rank reads the model's header (its own path: the file may live anywhere).
  RankReport mine;
  std::unique_ptr<Model> model;
  if (opts.backend != "cpu") {
    mine = failure(unimplemented("--pipeline runs the CPU backend only (got --backend " + opts.backend + ")"), kExitUsage);
  } else if (StatusOr<std::unique_ptr<Model>> m = Model::open(opts.model); !m.ok()) {
    mine = failure(m.status(), kExitUsage);
  } else {
    model = std::move(*m);
    mine.n_layer = model->hp.n_layer;
    for (int il = 0; il < model->hp.n_layer; ++il) mine.layer_bytes += model->layout.layer_bytes(il);
    mine.budget_bytes = static_cast<uint64_t>(opts.residency.ram_budget_mb) << 20;
  }
  if (int rc = exchange(command, c, mine, &all); rc >= 0) return rc;
  for (int r = 1; r < c->size(); ++r) {
    if (all[static_cast<size_t>(r)].n_layer != all[0].n_layer || all[static_cast<size_t>(r)].layer_bytes != all[0].layer_bytes) {
      if (c->rank() == 0)
        std::fprintf(stderr, "flea %s: pipeline rank %d of %d: its model has %lld layers of %llu bytes, rank 0's %lld of %llu "
                     "(every rank must open the same model)\n", command, r, c->size(),
                     static_cast<long long>(all[static_cast<size_t>(r)].n_layer),
                     static_cast<unsigned long long>(all[static_cast<size_t>(r)].layer_bytes),
                     static_cast<long long>(all[0].n_layer), static_cast<unsigned long long>(all[0].layer_bytes));
      return kExitUsage;
    }
  }
  std::vector<uint64_t> layer_bytes, budgets;
  for (int il = 0; il < model->hp.n_layer; ++il) layer_bytes.push_back(model->layout.layer_bytes(il));
  for (const RankReport& r : all) budgets.push_back(r.budget_bytes);
  StatusOr<std::vector<LayerSlice>> split = pipeline::split_layers(layer_bytes, budgets);
  if (!split.ok()) {  // the same on every rank
    if (c->rank() == 0) report_error(command, split.status(), kExitUsage);
    return kExitUsage;
  }
  p->split = *split;
  model.reset();
  if (c->rank() == 0) {
    std::fprintf(stderr, "pipeline: %d ranks (%s), layers split by %s:\n%s", c->size(), c->describe().c_str(),
                 budgets.front() > 0 && std::all_of(budgets.begin(), budgets.end(), [](uint64_t b) { return b > 0; })
                     ? "--ram-budget-mb" : "bytes",
                 pipeline::describe_split(p->split, layer_bytes, budgets).c_str());
  }

  // Phase 2: this rank's slice: plan, provider (its layers only) and session.
  EngineOptions ro = opts;
  ro.residency.slice = p->split[static_cast<size_t>(c->rank())];
  mine = RankReport{};
  if (StatusOr<Engine> e = open_engine(ro); !e.ok()) {
    mine = failure(e.status(), kExitUsage);
  } else {
    p->engine = std::move(*e);
    p->session = std::make_unique<Session>(*p->engine.model, p->engine.weights.get(), p->engine.pool.get(), n_ctx, 1,
                                           /*bound_chunked_kv=*/true, p->engine.kv_type, ro.residency.slice);
  }
  if (int rc = exchange(command, c, mine, &all); rc >= 0) return rc;
  if (c->rank() == 0)
    p->evaluator = std::make_unique<pipeline::PipelineEvaluator>(p->session.get(), c, p->engine.model->hp.n_vocab);
  return -1;
}

int serve_pipeline(const char* command, Pipeline* p) {
  if (Status st = pipeline::serve_stage(p->session.get(), p->comm.get(), &p->stats); !st.ok())
    return report_error(command, st, kExitFailure);
  if (StatusOr<nlohmann::json> f = gather_figures(p); !f.ok()) return report_error(command, f.status(), kExitFailure);
  return kExitOk;
}

nlohmann::json stop_pipeline(Pipeline* p) {
  if (!p->evaluator) return nullptr;
  if (Status st = p->evaluator->stop(); !st.ok()) {
    std::fprintf(stderr, "flea: pipeline: stopping the other ranks: %s\n", st.message().c_str());
    return nullptr;
  }
  StatusOr<nlohmann::json> f = gather_figures(p);
  if (!f.ok()) {
    std::fprintf(stderr, "flea: pipeline: gathering the ranks' figures: %s\n", f.status().message().c_str());
    return nullptr;
  }
  return *f;
}

}  // namespace flea::cli
