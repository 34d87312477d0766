#include "model/decode.h"

#include <chrono>

#include "flea/clock.h"

namespace flea {

StatusOr<BatchedResult> batched_greedy(Evaluator& s, const std::vector<std::vector<int32_t>>& prompts,
                                       int n_gen, int64_t n_vocab) {
  const int n = static_cast<int>(prompts.size());
  if (n == 0 || n > s.n_seq()) {
    return invalid_argument("batched_greedy: " + std::to_string(n) + " sequences for an evaluator of " +
                            std::to_string(s.n_seq()));
  }
  BatchedResult r;
  r.tokens.assign(static_cast<size_t>(n), {});
  std::vector<float> logits;
  // Prompts: one pass per sequence (their lengths differ), keeping each one's last row.
  std::vector<int32_t> next(static_cast<size_t>(n));
  const int64_t t0 = steady_now_ns();
  for (int q = 0; q < n; ++q) {
    std::vector<BatchRow> rows;
    for (int32_t tok : prompts[static_cast<size_t>(q)]) rows.push_back({q, tok});
    FLEA_RETURN_IF_ERROR(s.eval_batch(rows, &logits, false));
    next[static_cast<size_t>(q)] = argmax(logits.data(), n_vocab);
  }
  const int64_t t1 = steady_now_ns();
  for (int step = 0; step < n_gen; ++step) {
    std::vector<BatchRow> rows;
    for (int q = 0; q < n; ++q) {
      r.tokens[static_cast<size_t>(q)].push_back(next[static_cast<size_t>(q)]);
      rows.push_back({q, next[static_cast<size_t>(q)]});
    }
    if (step + 1 == n_gen) break;
    FLEA_RETURN_IF_ERROR(s.eval_batch(rows, &logits, true));  // one row per sequence
    ++r.steps;
    for (int q = 0; q < n; ++q) next[static_cast<size_t>(q)] = argmax(&logits[static_cast<size_t>(q * n_vocab)], n_vocab);
  }
  r.prompt_ns = t1 - t0;
  r.decode_ns = steady_now_ns() - t1;
  return r;
}

StatusOr<SpeculativeResult> speculative_greedy(Evaluator& target, Evaluator& draft,
                                               const std::vector<int32_t>& prompt, int n_gen, int k,
                                               int64_t n_vocab) {
  if (k < 1) return invalid_argument("speculative decoding needs k >= 1 draft tokens");
  if (prompt.empty()) return invalid_argument("speculative decoding needs a prompt");
  SpeculativeResult r;
  std::vector<float> tl, dl;
  FLEA_RETURN_IF_ERROR(target.eval(prompt, &tl, false));
  FLEA_RETURN_IF_ERROR(draft.eval(prompt, &dl, false));
  const int64_t t0 = steady_now_ns();
  // Tokens accepted into the output but not yet in each model's cache.
  std::vector<int32_t> pending_target = {argmax(tl.data(), n_vocab)};
  std::vector<int32_t> pending_draft = pending_target;
  r.tokens.push_back(pending_target[0]);

  while (static_cast<int>(r.tokens.size()) < n_gen) {
    const int want = std::min<int>(k, n_gen - static_cast<int>(r.tokens.size()));
    // Draft: catch up on the pending tokens, then propose `want` tokens one at a time.
    std::vector<int32_t> proposal;
    FLEA_RETURN_IF_ERROR(draft.eval(pending_draft, &dl, false));
    ++r.draft_passes;
    const int64_t draft_base = draft.n_past();
    for (int i = 0; i < want; ++i) {
      proposal.push_back(argmax(dl.data(), n_vocab));
      if (i + 1 < want) {
        FLEA_RETURN_IF_ERROR(draft.eval({proposal.back()}, &dl, false));
        ++r.draft_passes;
      }
    }
    r.drafted += want;
    // Target: pending tokens + the proposal in one pass; row (p - 1 + i) predicts what follows
    // proposal[i - 1] (row p - 1 predicts proposal[0]).
    const int64_t target_base = target.n_past();
    std::vector<int32_t> batch = pending_target;
    batch.insert(batch.end(), proposal.begin(), proposal.end());
    FLEA_RETURN_IF_ERROR(target.eval(batch, &tl, true));
    ++r.target_passes;
    const int64_t p = static_cast<int64_t>(pending_target.size());
    int accepted = 0;
    while (accepted < want &&
           argmax(&tl[static_cast<size_t>((p - 1 + accepted) * n_vocab)], n_vocab) == proposal[static_cast<size_t>(accepted)]) {
      ++accepted;
    }
    const int32_t bonus = argmax(&tl[static_cast<size_t>((p - 1 + accepted) * n_vocab)], n_vocab);
    r.accepted += accepted;
    for (int i = 0; i < accepted && static_cast<int>(r.tokens.size()) < n_gen; ++i) r.tokens.push_back(proposal[static_cast<size_t>(i)]);
    if (static_cast<int>(r.tokens.size()) < n_gen) r.tokens.push_back(bonus);
    // Roll both caches back to what was accepted; what they lack becomes pending.
    FLEA_RETURN_IF_ERROR(target.truncate(0, target_base + p + accepted));
    pending_target = {bonus};
    // The draft has proposal[0 .. want-2] in its cache after draft_base.
    const int in_draft = std::min(accepted, want - 1);
    FLEA_RETURN_IF_ERROR(draft.truncate(0, draft_base + in_draft));
    pending_draft.assign(proposal.begin() + in_draft, proposal.begin() + accepted);
    pending_draft.push_back(bonus);
  }
  r.elapsed_ns = steady_now_ns() - t0;
  return r;
}

}  // namespace flea
