#include "pipeline/stage.h"

#include <cstring>

#include "flea/clock.h"

namespace flea::pipeline {
namespace {

// Every message is a Header, then its payload: kEval: T rows (seq, token int32 pairs) and, between
// stages, T × n_embd floats; kLogits: n_floats floats; kError: msg_bytes of text.
enum class Op : int32_t { kEval = 1, kLogits = 2, kError = 3, kStop = 4 };
struct Header {
  Op op = Op::kStop;
  int32_t all_logits = 0;
  int32_t want_logits = 0;
  int32_t error_rank = -1;
  int64_t n_rows = 0;
  int64_t n_floats = 0;
  int64_t msg_bytes = 0;
};
static_assert(sizeof(Header) == 40, "Header crosses process boundaries: keep it packed and fixed");

Status send_header(Comm* comm, int to, const Header& h) { return comm->send(to, &h, sizeof(h)); }

// The error text travels as a payload so rank 0 can name the rank and the cause.
Status send_error(Comm* comm, int to, int rank, const std::string& msg) {
  Header h;
  h.op = Op::kError;
  h.error_rank = rank;
  h.msg_bytes = static_cast<int64_t>(msg.size());
  FLEA_RETURN_IF_ERROR(send_header(comm, to, h));
  return msg.empty() ? ok_status() : comm->send(to, msg.data(), msg.size());
}

StatusOr<std::string> recv_error_text(Comm* comm, int from, const Header& h) {
  std::string msg(static_cast<size_t>(h.msg_bytes), '\0');
  if (!msg.empty()) FLEA_RETURN_IF_ERROR(comm->recv(from, msg.data(), msg.size()));
  return msg;
}

Status stage_error(int rank, const std::string& msg) {
  return internal_error("pipeline rank " + std::to_string(rank) + ": " + msg);
}

}  // namespace

PipelineEvaluator::PipelineEvaluator(Session* local, Comm* comm, int64_t n_vocab)
    : local_(local), comm_(comm), n_vocab_(n_vocab) {}

PipelineEvaluator::~PipelineEvaluator() { (void)stop(); }

Status PipelineEvaluator::eval(const std::vector<int32_t>& tokens, std::vector<float>* logits, bool all_logits) {
  std::vector<BatchRow> rows(tokens.size());
  for (size_t t = 0; t < tokens.size(); ++t) rows[t] = {0, tokens[t]};
  return eval_batch(rows, logits, all_logits);
}

void PipelineEvaluator::reset() {
  // Not supported across ranks; mark the pipeline unusable rather than silently diverge.
  broken_ = true;
}

Status PipelineEvaluator::eval_batch(const std::vector<BatchRow>& rows, std::vector<float>* logits, bool all_logits) {
  if (stopped_) return internal_error("pipeline: eval after stop");
  if (broken_) return internal_error("pipeline: an earlier step failed (or reset() was called); the ranks' caches disagree");
  const int n = comm_->size();
  if (n == 1) return local_->eval_stage(rows, nullptr, logits, all_logits);
  const int64_t t0 = steady_now_ns();
  std::vector<float> hidden;
  if (Status st = local_->eval_stage(rows, &hidden, nullptr, all_logits); !st.ok()) {
    broken_ = true;
    return stage_error(0, st.message());
  }
  const int64_t t1 = steady_now_ns();
  Header h;
  h.op = Op::kEval;
  h.all_logits = all_logits;
  h.want_logits = logits != nullptr;
  h.n_rows = static_cast<int64_t>(rows.size());
  h.n_floats = static_cast<int64_t>(hidden.size());
  std::vector<int32_t> packed(rows.size() * 2);
  for (size_t t = 0; t < rows.size(); ++t) {
    packed[2 * t] = rows[t].seq;
    packed[2 * t + 1] = rows[t].token;
  }
  FLEA_RETURN_IF_ERROR(send_header(comm_, 1, h));
  FLEA_RETURN_IF_ERROR(comm_->send(1, packed.data(), packed.size() * sizeof(int32_t)));
  FLEA_RETURN_IF_ERROR(comm_->send(1, hidden.data(), hidden.size() * sizeof(float)));
  const int64_t t2 = steady_now_ns();
  // The last rank answers with the logits, or with the error of whichever stage failed.
  Header back;
  FLEA_RETURN_IF_ERROR(comm_->recv(n - 1, &back, sizeof(back)));
  Status result = ok_status();
  if (back.op == Op::kError) {
    FLEA_ASSIGN_OR_RETURN(std::string msg, recv_error_text(comm_, n - 1, back));
    broken_ = true;
    result = stage_error(back.error_rank, msg);
  } else if (back.op != Op::kLogits) {
    return internal_error("pipeline: rank " + std::to_string(n - 1) + " answered with message " +
                          std::to_string(static_cast<int>(back.op)) + " instead of logits");
  } else if (logits != nullptr) {
    const int64_t want = (all_logits ? h.n_rows : 1) * n_vocab_;
    if (back.n_floats != want)
      return internal_error("pipeline: rank " + std::to_string(n - 1) + " returned " + std::to_string(back.n_floats) +
                            " logits, expected " + std::to_string(want));
    logits->resize(static_cast<size_t>(back.n_floats));
    FLEA_RETURN_IF_ERROR(comm_->recv(n - 1, logits->data(), logits->size() * sizeof(float)));
  }
  const int64_t t3 = steady_now_ns();
  ++stats_.steps;
  stats_.compute_ns += t1 - t0;
  stats_.send_ns += t2 - t1;
  stats_.wait_ns += t3 - t2;
  stats_.sent_bytes += sizeof(Header) + packed.size() * sizeof(int32_t) + hidden.size() * sizeof(float);
  return result;
}

Status PipelineEvaluator::stop() {
  if (stopped_ || comm_->size() == 1) {
    stopped_ = true;
    return ok_status();
  }
  stopped_ = true;
  return send_header(comm_, 1, Header{});  // Op::kStop travels down the chain
}

Status serve_stage(Session* session, Comm* comm, StageStats* stats) {
  const int rank = comm->rank(), n = comm->size();
  const bool last = rank == n - 1;
  const int next = last ? 0 : rank + 1;
  std::vector<int32_t> packed;
  std::vector<BatchRow> rows;
  std::vector<float> hidden, logits;
  for (;;) {
    const int64_t t0 = steady_now_ns();
    Header h;
    FLEA_RETURN_IF_ERROR(comm->recv(rank - 1, &h, sizeof(h)));
    if (h.op == Op::kStop) {
      if (!last) FLEA_RETURN_IF_ERROR(send_header(comm, next, h));
      return ok_status();
    }
    if (h.op == Op::kError) {  // an earlier stage failed: pass it on
      FLEA_ASSIGN_OR_RETURN(std::string msg, recv_error_text(comm, rank - 1, h));
      FLEA_RETURN_IF_ERROR(send_error(comm, next, h.error_rank, msg));
      continue;
    }
    if (h.op != Op::kEval || h.n_rows < 1 || h.n_floats < 0)
      return internal_error("pipeline rank " + std::to_string(rank) + ": unexpected message " + std::to_string(static_cast<int>(h.op)) +
                            " from rank " + std::to_string(rank - 1));
    packed.resize(static_cast<size_t>(h.n_rows) * 2);
    hidden.resize(static_cast<size_t>(h.n_floats));
    FLEA_RETURN_IF_ERROR(comm->recv(rank - 1, packed.data(), packed.size() * sizeof(int32_t)));
    FLEA_RETURN_IF_ERROR(comm->recv(rank - 1, hidden.data(), hidden.size() * sizeof(float)));
    rows.resize(static_cast<size_t>(h.n_rows));
    for (size_t t = 0; t < rows.size(); ++t) rows[t] = {packed[2 * t], packed[2 * t + 1]};
    const int64_t t1 = steady_now_ns();
    const Status st = session->eval_stage(rows, &hidden, last && h.want_logits ? &logits : nullptr, h.all_logits != 0);
    const int64_t t2 = steady_now_ns();
    if (!st.ok()) {
      FLEA_RETURN_IF_ERROR(send_error(comm, next, rank, st.message()));
      continue;
    }
    Header out = h;
    uint64_t sent = sizeof(Header);
    if (last) {
      out.op = Op::kLogits;
      out.n_floats = h.want_logits ? static_cast<int64_t>(logits.size()) : 0;
      FLEA_RETURN_IF_ERROR(send_header(comm, next, out));
      if (out.n_floats > 0) FLEA_RETURN_IF_ERROR(comm->send(next, logits.data(), logits.size() * sizeof(float)));
      sent += static_cast<uint64_t>(out.n_floats) * sizeof(float);
    } else {
      out.n_floats = static_cast<int64_t>(hidden.size());
      FLEA_RETURN_IF_ERROR(send_header(comm, next, out));
      FLEA_RETURN_IF_ERROR(comm->send(next, packed.data(), packed.size() * sizeof(int32_t)));
      FLEA_RETURN_IF_ERROR(comm->send(next, hidden.data(), hidden.size() * sizeof(float)));
      sent += packed.size() * sizeof(int32_t) + hidden.size() * sizeof(float);
    }
    const int64_t t3 = steady_now_ns();
    if (stats != nullptr) {
      ++stats->steps;
      stats->wait_ns += t1 - t0;
      stats->compute_ns += t2 - t1;
      stats->send_ns += t3 - t2;
      stats->sent_bytes += sent;
    }
  }
}

}  // namespace flea::pipeline
