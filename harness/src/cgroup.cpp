#include "cgroup.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <thread>
#include <vector>

namespace flea::harness {
namespace {

bool exists(const std::string& p) { return access(p.c_str(), F_OK) == 0; }

// The file's text, or "" (and *err = errno) when it cannot be read.
std::string read_text(const std::string& path, int* err = nullptr) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    if (err != nullptr) *err = errno;
    return "";
  }
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// One write(2) of `value`, as the cgroup files want it; 0 or the errno.
int write_value(const std::string& path, const std::string& value) {
  const int fd = open(path.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) return errno;
  const ssize_t n = write(fd, value.data(), value.size());
  const int err = n == static_cast<ssize_t>(value.size()) ? 0 : (n < 0 ? errno : EIO);
  close(fd);
  return err;
}

int64_t read_int(const std::string& path) {
  const std::string t = read_text(path);
  if (t.empty() || t.compare(0, 3, "max") == 0) return -1;
  return std::strtoll(t.c_str(), nullptr, 10);
}

// "key value" lines (memory.stat, memory.events, memory.oom_control): the value of `key`, or -1.
int64_t read_keyed(const std::string& path, const std::string& key) {
  std::istringstream in(read_text(path));
  std::string k;
  int64_t v;
  while (in >> k >> v) {
    if (k == key) return v;
  }
  return -1;
}

// What the user can do about an errno met on the cgroup filesystem.
std::string remedy(int err) {
  switch (err) {
    case EACCES:
    case EPERM:
      return "run the harness as root, or set $FLEA_CGROUP_PARENT to a cgroup delegated to this user";
    case EROFS:
      return "the cgroup filesystem is mounted read-only (as in most containers): run on the host, or in a "
             "container given a writable cgroup";
    case ENOENT:
      return "the memory controller is not mounted there (mount it, or set $FLEA_CGROUP_PARENT)";
    default:
      return "";
  }
}

std::string failure(const std::string& what, const std::string& path, int err) {
  std::string m = what + ": " + path + ": " + std::strerror(err);
  const std::string r = remedy(err);
  if (!r.empty()) m += " (" + r + ")";
  return m;
}

// /proc/self/mountinfo escapes blanks in paths as \040 and friends.
std::string unescape_mount_path(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 3 < s.size()) {
      const std::string oct = s.substr(i + 1, 3);
      if (oct.size() == 3 && oct.find_first_not_of("01234567") == std::string::npos) {
        out += static_cast<char>(std::strtol(oct.c_str(), nullptr, 8));
        i += 3;
        continue;
      }
    }
    out += s[i];
  }
  return out;
}

bool has_token(const std::string& list, char sep, const std::string& token) {
  std::istringstream in(list);
  std::string t;
  while (std::getline(in, t, sep)) {
    while (!t.empty() && (t.back() == '\n' || t.back() == ' ')) t.pop_back();
    if (t == token) return true;
  }
  return false;
}

std::string fmt_mib(int64_t bytes) {
  char buf[32];
  const double mib = static_cast<double>(bytes) / 1048576.0;
  if (bytes % 1048576 == 0) std::snprintf(buf, sizeof(buf), "%.0f MiB", mib);
  else std::snprintf(buf, sizeof(buf), "%.1f MiB", mib);
  return buf;
}

}  // namespace

StatusOr<CgroupRoot> find_memory_cgroup_root() {
  if (const char* env = std::getenv("FLEA_CGROUP_PARENT"); env != nullptr && *env != '\0') {
    std::string p = env;
    while (p.size() > 1 && p.back() == '/') p.pop_back();
    // The parent may not exist yet (it is made like flea-lab); its own parent says the version.
    const std::string probe = exists(p) ? p : p.substr(0, p.rfind('/'));
    if (exists(probe + "/cgroup.controllers")) return CgroupRoot{"v2", p};
    if (exists(probe + "/memory.limit_in_bytes")) return CgroupRoot{"v1", p};
    return not_found("$FLEA_CGROUP_PARENT=" + p + " is not in a memory cgroup hierarchy: " + probe +
                     " has neither cgroup.controllers (v2) nor memory.limit_in_bytes (v1)");
  }
  int err = 0;
  const std::string mounts = read_text("/proc/self/mountinfo", &err);
  if (mounts.empty()) return not_found(failure("cannot read the mount table", "/proc/self/mountinfo", err));
  std::string v1, v2;
  std::istringstream in(mounts);
  std::string line;
  while (std::getline(in, line)) {
    // id parent major:minor root mount-point options [optional fields] - fstype source super-options
    const size_t dash = line.find(" - ");
    if (dash == std::string::npos) continue;
    std::istringstream pre(line.substr(0, dash)), post(line.substr(dash + 3));
    std::string id, parent, dev, root, mount_point, fstype, source, super_opts;
    pre >> id >> parent >> dev >> root >> mount_point;
    post >> fstype >> source >> super_opts;
    if (fstype == "cgroup" && v1.empty() && has_token(super_opts, ',', "memory")) v1 = unescape_mount_path(mount_point);
    if (fstype == "cgroup2" && v2.empty()) v2 = unescape_mount_path(mount_point);
  }
  // A v1 memory hierarchy owns the controller (on a hybrid host v2 then lists no memory).
  if (!v1.empty()) return CgroupRoot{"v1", v1 + "/flea-lab"};
  if (!v2.empty()) {
    const std::string controllers = read_text(v2 + "/cgroup.controllers");
    if (has_token(controllers, ' ', "memory")) return CgroupRoot{"v2", v2 + "/flea-lab"};
    return not_found("cgroup v2 is mounted at " + v2 + " but " + v2 + "/cgroup.controllers lists no memory controller ('" +
                     controllers.substr(0, controllers.find('\n')) + "'): boot with the memory controller enabled, "
                     "or set $FLEA_CGROUP_PARENT to a cgroup where it is");
  }
  return not_found("no memory cgroup: /proc/self/mountinfo has neither a cgroup v1 hierarchy with the memory "
                   "controller nor a cgroup2 mount (mount one, e.g. `mount -t cgroup2 none /sys/fs/cgroup`)");
}

StatusOr<std::unique_ptr<MemoryCgroup>> MemoryCgroup::create(const std::string& name, int64_t limit_bytes) {
  if (limit_bytes <= 0) return invalid_argument("memory cgroup " + name + ": limit " + std::to_string(limit_bytes) + " bytes");
  FLEA_ASSIGN_OR_RETURN(CgroupRoot root, find_memory_cgroup_root());
  if (mkdir(root.parent.c_str(), 0755) != 0 && errno != EEXIST) {
    return io_error(failure("cannot create the memory cgroup parent (mkdir)", root.parent, errno));
  }
  std::unique_ptr<MemoryCgroup> cg(new MemoryCgroup());
  cg->version_ = root.version;
  cg->path_ = root.parent + "/" + name;
  if (mkdir(cg->path_.c_str(), 0755) != 0) return io_error(failure("cannot create the memory cgroup (mkdir)", cg->path_, errno));
  // From here the destructor removes the directory on any error.
  const std::string limit = std::to_string(limit_bytes);
  std::string limit_file;
  if (root.version == "v2") {
    limit_file = cg->path_ + "/memory.max";
    if (!exists(limit_file)) {
      // Controllers reach a child only through its parent's cgroup.subtree_control.
      const std::string sc = root.parent + "/cgroup.subtree_control";
      const int e = write_value(sc, "+memory");
      if (e != 0) {
        std::string why = "cannot enable the memory controller for " + root.parent + "'s children: write '+memory' to " + sc +
                          ": " + std::strerror(e);
        if (e == EBUSY) why += " (that cgroup has processes of its own: set $FLEA_CGROUP_PARENT to an empty one)";
        else if (e == ENOENT) why += " (memory is not in " + root.parent + "/cgroup.controllers: enable it in its parent's cgroup.subtree_control)";
        else if (!remedy(e).empty()) why += " (" + remedy(e) + ")";
        return io_error(why);
      }
      if (!exists(limit_file)) return io_error(limit_file + " is missing after enabling the memory controller in " + sc);
    }
  } else {
    limit_file = cg->path_ + "/memory.limit_in_bytes";
  }
  if (const int e = write_value(limit_file, limit); e != 0) {
    return io_error(failure("cannot set the memory limit: write " + limit + " to", limit_file, e));
  }
  // No swap beyond the limit: the emulated machine has that much memory, not that much plus this
  // host's swap. (v1: memsw >= limit must hold, so it is written after the limit.)
  const std::string swap_file = root.version == "v2" ? cg->path_ + "/memory.swap.max" : cg->path_ + "/memory.memsw.limit_in_bytes";
  if (exists(swap_file)) {
    const std::string swap_value = root.version == "v2" ? "0" : limit;
    if (const int e = write_value(swap_file, swap_value); e != 0) {
      return io_error(failure("cannot limit swap: write " + swap_value + " to", swap_file, e));
    }
    cg->swap_limited_ = true;
  }
  // The kernel rounds the limit to pages: record what it enforces.
  const int64_t effective = read_int(limit_file);
  cg->limit_bytes_ = effective > 0 ? effective : limit_bytes;
  const std::string procs = cg->path_ + "/cgroup.procs";
  cg->procs_fd_ = open(procs.c_str(), O_WRONLY | O_CLOEXEC);
  if (cg->procs_fd_ < 0) return io_error(failure("cannot open the cgroup's process list", procs, errno));
  return cg;
}

MemoryCgroup::~MemoryCgroup() { (void)remove(); }

CgroupUsage MemoryCgroup::usage() const {
  CgroupUsage u;
  u.version = version_;
  u.path = path_;
  u.limit_bytes = limit_bytes_;
  u.swap_limited = swap_limited_;
  if (version_ == "v2") {
    u.peak_bytes = read_int(path_ + "/memory.peak");
    u.page_cache_bytes = read_keyed(path_ + "/memory.stat", "file");
    u.failcnt = read_keyed(path_ + "/memory.events", "max");
    u.oom_kills = read_keyed(path_ + "/memory.events", "oom_kill");
  } else {
    u.peak_bytes = read_int(path_ + "/memory.max_usage_in_bytes");
    u.page_cache_bytes = read_keyed(path_ + "/memory.stat", "cache");
    // With swap limited a charge can fail on memsw first (it is the larger usage): count both.
    u.failcnt = read_int(path_ + "/memory.failcnt");
    const int64_t memsw = swap_limited_ ? read_int(path_ + "/memory.memsw.failcnt") : -1;
    if (u.failcnt >= 0 && memsw > 0) u.failcnt += memsw;
    u.oom_kills = read_keyed(path_ + "/memory.oom_control", "oom_kill");
  }
  return u;
}

Status MemoryCgroup::remove() {
  if (removed_) return ok_status();
  if (procs_fd_ >= 0) close(procs_fd_);
  procs_fd_ = -1;
  if (path_.empty()) return ok_status();
  // The run's page cache stays charged after its last process exits; left there it would be
  // re-charged to the parent (v1) or pin a dying cgroup (v2). Best effort: rmdir works without it.
  if (version_ == "v2") (void)write_value(path_ + "/memory.reclaim", std::to_string(limit_bytes_));
  else (void)write_value(path_ + "/memory.force_empty", "0");
  // The reaped child has left the cgroup, but its exit may still be finishing: a few tries on EBUSY.
  int err = 0;
  for (int i = 0; i < 50; ++i) {
    if (rmdir(path_.c_str()) == 0 || errno == ENOENT) {
      removed_ = true;
      return ok_status();
    }
    err = errno;
    if (err != EBUSY) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  removed_ = true;  // one report is enough; the destructor does not try again
  return io_error(failure("cannot remove the memory cgroup (rmdir)", path_, err) +
                  (err == EBUSY ? " (a process the run started is still in it)" : ""));
}

std::string oom_kill_message(const CgroupUsage& u) {
  if (u.oom_kills <= 0) return "";
  std::string m = "killed by the memory cgroup at its " + fmt_mib(u.limit_bytes) + " limit (";
  if (u.peak_bytes >= 0) m += "peak " + fmt_mib(u.peak_bytes) + ", page cache included; ";
  m += std::to_string(u.oom_kills) + " OOM kill" + (u.oom_kills == 1 ? "" : "s") + ")";
  return m;
}

}  // namespace flea::harness
