#include "io/io_backend.h"

#include <sys/stat.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <sstream>
#include <thread>

namespace flea::io {

namespace {
// EINTR is harmless and bounded only to avoid spinning forever on a broken injector; EAGAIN backs
// off exponentially from 100 us up to ~0.2 s in total before giving up.
constexpr int kMaxEintrRetries = 1000;
constexpr int kMaxEagainRetries = 12;
constexpr int kMaxZeroProgressRetries = 8;
}  // namespace

const char* fault_kind_name(FaultKind k) {
  switch (k) {
    case FaultKind::kShortRead: return "short";
    case FaultKind::kEintr: return "eintr";
    case FaultKind::kEagain: return "eagain";
    case FaultKind::kEio: return "eio";
    case FaultKind::kTruncate: return "trunc";
  }
  return "?";
}

StatusOr<FaultPlan> FaultPlan::parse(const std::string& spec) {
  FaultPlan plan;
  std::stringstream ss(spec);
  std::string item;
  while (std::getline(ss, item, ',')) {
    if (item.empty()) continue;
    const size_t at = item.find('@');
    if (at == std::string::npos)
      return invalid_argument("fault '" + item + "': expected KIND@OFFSET[*TIMES]");
    const std::string kind = item.substr(0, at);
    std::string rest = item.substr(at + 1);
    Fault f;
    if (kind == "short") f.kind = FaultKind::kShortRead;
    else if (kind == "eintr") f.kind = FaultKind::kEintr;
    else if (kind == "eagain") f.kind = FaultKind::kEagain;
    else if (kind == "eio") f.kind = FaultKind::kEio;
    else if (kind == "trunc") f.kind = FaultKind::kTruncate;
    else
      return invalid_argument("fault kind '" + kind + "' unknown; known: short eintr eagain eio trunc");
    const size_t star = rest.find('*');
    try {
      size_t used = 0;
      f.offset = std::stoull(rest.substr(0, star), &used);
      if (used != rest.substr(0, star).size()) throw std::invalid_argument("trailing");
      if (star != std::string::npos) {
        f.times = std::stoi(rest.substr(star + 1), &used);
        if (used != rest.substr(star + 1).size() || f.times < 1) throw std::invalid_argument("times");
      }
    } catch (const std::exception&) {
      return invalid_argument("fault '" + item + "': offset and times must be numbers (times >= 1)");
    }
    plan.faults.push_back(f);
  }
  return plan;
}

std::string FaultPlan::to_string() const {
  std::string s;
  for (const Fault& f : faults) {
    if (!s.empty()) s += ",";
    s += std::string(fault_kind_name(f.kind)) + "@" + std::to_string(f.offset);
    if (f.times != 1) s += "*" + std::to_string(f.times);
  }
  return s;
}

StatusOr<FileStat> stat_fd(int fd) {
  struct stat st;
  if (fstat(fd, &st) != 0) return io_error(std::string("fstat failed: ") + std::strerror(errno));
  FileStat s;
  s.size = static_cast<uint64_t>(st.st_size);
  s.mtime_ns = static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000LL + st.st_mtim.tv_nsec;
  s.inode = static_cast<uint64_t>(st.st_ino);
  return s;
}

StatusOr<FileStat> IoBackend::stat() const {
  if (fd_ < 0) return internal_error("backend " + name() + ": stat() before open()");
  return stat_fd(fd_);
}

std::vector<std::string> IoBackend::warnings() const {
  std::lock_guard<std::mutex> lock(warn_mu_);
  return warnings_;
}

void IoBackend::add_warning(const std::string& w) {
  std::lock_guard<std::mutex> lock(warn_mu_);
  warnings_.push_back(w);
}

std::string IoBackend::describe(const ReadRequest& req, const std::string& what) const {
  std::string layer = req.layer < 0 ? std::string("globals") : std::to_string(req.layer);
  return "read error: file '" + path_ + "' offset " + std::to_string(req.offset) + " length " +
         std::to_string(req.length) + " layer " + layer + " backend " + name() + ": " + what;
}

Status IoBackend::check_unchanged(uint64_t needed_end, int layer) const {
  FLEA_ASSIGN_OR_RETURN(FileStat now, stat());
  const std::string where = "file '" + path_ + "' (layer " +
                            (layer < 0 ? std::string("globals") : std::to_string(layer)) +
                            ", backend " + name() + ")";
  if (now.size < needed_end || now.size != opened_.size)
    return data_loss(where + " was truncated or resized during the run: size is now " +
                     std::to_string(now.size) + " bytes, was " + std::to_string(opened_.size) +
                     ", the plan needs " + std::to_string(needed_end));
  if (now.mtime_ns != opened_.mtime_ns || now.inode != opened_.inode)
    return data_loss(where + " was modified during the run (mtime changed); refusing to use its bytes");
  return ok_status();
}

StatusOr<uint64_t> IoBackend::read(const ReadRequest& req) {
  uint64_t pos = 0;
  int eintr = 0, eagain = 0, stuck = 0;
  while (pos < req.length) {
    const AttemptResult r = read_once(req.offset + pos, req.length - pos, req.dst + pos);
    if (r.err == EINTR) {
      if (++eintr > kMaxEintrRetries) return io_error(describe(req, "EINTR retried too often"));
      continue;
    }
    if (r.err == EAGAIN || r.err == EWOULDBLOCK) {
      if (++eagain > kMaxEagainRetries)
        return io_error(describe(req, "EAGAIN persisted after " + std::to_string(kMaxEagainRetries) + " retries"));
      std::this_thread::sleep_for(std::chrono::microseconds(100 << std::min(eagain, 11)));
      continue;
    }
    if (r.err != 0)
      return io_error(describe(req, std::string(std::strerror(r.err)) + " (errno " + std::to_string(r.err) +
                                        ") at file offset " + std::to_string(req.offset + pos)));
    if (r.n == 0) break;  // end of file
    uint64_t advance = static_cast<uint64_t>(r.n);
    if (direct() && advance % kIoAlignment != 0 && pos + advance < req.length) {
      // An unaligned short O_DIRECT read is either end-of-file or a partial transfer; the next
      // O_DIRECT read must start aligned, so keep only the aligned prefix unless we hit EOF.
      if (req.offset + pos + advance >= opened_.size) {
        pos += advance;
        break;
      }
      advance = align_down(advance);
      if (advance == 0) {
        if (++stuck > kMaxZeroProgressRetries)
          return io_error(describe(req, "direct read makes no aligned progress"));
        continue;
      }
    }
    pos += advance;
    stuck = 0;
  }
  return pos;
}

std::vector<std::string> known_io_backends() {
  std::vector<std::string> names = {"pread", "odirect"};
#ifdef FLEA_HAVE_IO_URING
  names.push_back("io_uring");
#endif
  names.push_back("mmap");
  names.push_back("throttled");
  names.push_back("faulty");
  return names;
}

bool io_uring_available() {
#ifdef FLEA_HAVE_IO_URING
  return io_uring_probe();
#else
  return false;
#endif
}

StatusOr<std::unique_ptr<IoBackend>> make_io_backend(const std::string& name,
                                                     const IoBackendOptions& opts) {
  auto known = [] {
    std::string s;
    for (const std::string& n : known_io_backends()) s += (s.empty() ? "" : ", ") + n;
    return s;
  };
  if (name == "pread") return make_pread_backend();
  if (name == "odirect") return make_odirect_backend(opts);
  if (name == "mmap") return make_mmap_backend();
  if (name == "io_uring") {
#ifdef FLEA_HAVE_IO_URING
    if (!io_uring_probe())
      return unimplemented("io backend 'io_uring': the kernel refused io_uring_setup (disabled or "
                           "sandboxed); use odirect or pread");
    return make_io_uring_backend(opts);
#else
    return unimplemented("io backend 'io_uring' is not compiled in (liburing was not found at "
                         "configure time); known backends: " + known());
#endif
  }
  // Composed wrappers: throttled:<inner>:<GB/s>, faulty:<inner>:<plan>.
  const size_t c1 = name.find(':');
  const std::string head = name.substr(0, c1);
  if (head == "throttled" || head == "faulty") {
    const size_t c2 = c1 == std::string::npos ? std::string::npos : name.find(':', c1 + 1);
    if (c2 == std::string::npos) {
      return invalid_argument("io backend '" + name + "': expected " + head +
                              (head == "throttled" ? ":<inner>:<GB/s>" : ":<inner>:<fault plan>"));
    }
    const std::string inner_name = name.substr(c1 + 1, c2 - c1 - 1);
    const std::string arg = name.substr(c2 + 1);
    FLEA_ASSIGN_OR_RETURN(std::unique_ptr<IoBackend> inner, make_io_backend(inner_name, opts));
    if (head == "throttled") {
      double gb_s = 0;
      try {
        gb_s = std::stod(arg);
      } catch (const std::exception&) {
        gb_s = 0;
      }
      if (!(gb_s > 0)) return invalid_argument("io backend '" + name + "': GB/s must be a positive number");
      return make_throttled_backend(std::move(inner), gb_s);
    }
    FLEA_ASSIGN_OR_RETURN(FaultPlan plan, FaultPlan::parse(arg));
    return make_faulty_backend(std::move(inner), std::move(plan));
  }
  return invalid_argument("unknown io backend '" + name + "'; known: " + known());
}

}  // namespace flea::io
