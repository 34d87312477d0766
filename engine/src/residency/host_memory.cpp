#include "residency/host_memory.h"

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <vector>

namespace flea {

namespace {
constexpr uint64_t kGiB = 1ull << 30;
// cgroup v1 writes "no limit" as PAGE_COUNTER_MAX pages (9223372036854771712 on x86-64).
constexpr uint64_t kNoLimitBytes = 1ull << 60;

bool read_text(const std::string& path, std::string* out) {
  std::ifstream f(path);
  if (!f) return false;
  std::stringstream ss;
  ss << f.rdbuf();
  *out = ss.str();
  return true;
}

// The first unsigned number in the file (false when absent or "max").
bool read_u64(const std::string& path, uint64_t* v) {
  std::string s;
  if (!read_text(path, &s)) return false;
  char* end = nullptr;
  const unsigned long long x = std::strtoull(s.c_str(), &end, 10);
  if (end == s.c_str()) return false;
  *v = x;
  return true;
}

// `key value` from a memory.stat or meminfo style file (value in the file's unit).
bool find_key(const std::string& text, const std::string& key, uint64_t* v) {
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(key, 0) != 0 || line.size() <= key.size()) continue;
    const char c = line[key.size()];
    if (c != ' ' && c != ':' && c != '\t') continue;
    const char* p = line.c_str() + key.size() + 1;
    char* end = nullptr;
    const unsigned long long x = std::strtoull(p, &end, 10);
    if (end == p) return false;
    *v = x;
    return true;
  }
  return false;
}

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::string item;
  std::istringstream in(s);
  while (std::getline(in, item, sep)) out.push_back(item);
  return out;
}

struct CgroupMount {
  std::string version;  // "v1" | "v2"
  std::string root;     // the hierarchy's directory mounted there (mountinfo field 4)
  std::string point;    // where it is mounted
};

// The memory controller's mount: a v1 "cgroup" mount with the memory option, else the cgroup2 one.
bool find_mount(const std::string& mountinfo, const std::string& version, CgroupMount* m) {
  std::istringstream in(mountinfo);
  std::string line;
  while (std::getline(in, line)) {
    const size_t dash = line.find(" - ");
    if (dash == std::string::npos) continue;
    std::istringstream pre(line.substr(0, dash)), post(line.substr(dash + 3));
    std::string id, parent, dev, root, point, fstype, source, super;
    pre >> id >> parent >> dev >> root >> point;
    post >> fstype >> source >> super;
    if (version == "v1" && fstype == "cgroup") {
      const std::vector<std::string> opts = split(super, ',');
      if (std::find(opts.begin(), opts.end(), "memory") == opts.end()) continue;
    } else if (!(version == "v2" && fstype == "cgroup2")) {
      continue;
    }
    *m = {version, root, point};
    return true;
  }
  return false;
}

// The process's cgroup path in the hierarchy of `version` from /proc/self/cgroup.
bool find_cgroup_path(const std::string& self_cgroup, const std::string& version, std::string* path) {
  std::istringstream in(self_cgroup);
  std::string line;
  while (std::getline(in, line)) {
    const size_t a = line.find(':'), b = line.find(':', a + 1);
    if (a == std::string::npos || b == std::string::npos) continue;
    const std::string controllers = line.substr(a + 1, b - a - 1);
    const std::vector<std::string> c = split(controllers, ',');
    const bool match = version == "v1" ? std::find(c.begin(), c.end(), "memory") != c.end()
                                       : line.compare(0, a, "0") == 0 && controllers.empty();
    if (!match) continue;
    *path = line.substr(b + 1);
    return true;
  }
  return false;
}

// Walks from the process's cgroup directory up to the mount point, keeping the level with the least
// headroom (limit - used).
void probe_cgroup(const std::string& root, const std::string& version, const CgroupMount& m, const std::string& cg_path,
                  HostMemory* h) {
  std::string rel = cg_path;
  if (m.root != "/") {
    if (rel.rfind(m.root, 0) != 0) return;  // our cgroup is not inside the mounted part
    rel = rel.substr(m.root.size());
  }
  std::string dir = m.point + (rel == "/" ? "" : rel);
  const std::string limit_file = version == "v1" ? "memory.limit_in_bytes" : "memory.max";
  const std::string usage_file = version == "v1" ? "memory.usage_in_bytes" : "memory.current";
  const std::string inactive_key = version == "v1" ? "total_inactive_file" : "inactive_file";
  uint64_t best_headroom = UINT64_MAX;
  while (true) {
    uint64_t limit = 0, usage = 0;
    if (read_u64(root + dir + "/" + limit_file, &limit) && limit < kNoLimitBytes &&
        read_u64(root + dir + "/" + usage_file, &usage)) {
      std::string stat;
      uint64_t inactive = 0;
      if (read_text(root + dir + "/memory.stat", &stat)) find_key(stat, inactive_key, &inactive);
      const uint64_t used = usage - std::min(usage, inactive);
      const uint64_t headroom = limit - std::min(limit, used);
      if (headroom < best_headroom) {
        best_headroom = headroom;
        h->cgroup_limit_bytes = limit;
        h->cgroup_used_bytes = used;
        h->cgroup = version + " " + dir;
      }
    }
    if (dir.size() <= m.point.size()) break;
    dir = dir.substr(0, dir.rfind('/'));
    if (dir.size() < m.point.size()) break;
  }
}
}  // namespace

std::string human_bytes(uint64_t bytes) {
  char buf[32];
  if (bytes >= kGiB) {
    std::snprintf(buf, sizeof(buf), "%.2f GiB", static_cast<double>(bytes) / kGiB);
  } else {
    std::snprintf(buf, sizeof(buf), "%.1f MiB", static_cast<double>(bytes) / (1 << 20));
  }
  return buf;
}

uint64_t HostMemory::available_bytes() const {
  if (cgroup_limit_bytes == 0) return mem_available_bytes;
  return std::min(mem_available_bytes, cgroup_limit_bytes - std::min(cgroup_limit_bytes, cgroup_used_bytes));
}

std::string HostMemory::describe() const {
  const std::string meminfo = "MemAvailable " + human_bytes(mem_available_bytes);
  if (cgroup_limit_bytes == 0) return meminfo;
  const uint64_t headroom = cgroup_limit_bytes - std::min(cgroup_limit_bytes, cgroup_used_bytes);
  const std::string cg = "cgroup " + cgroup + ": limit " + human_bytes(cgroup_limit_bytes) + " - used " + human_bytes(cgroup_used_bytes) +
                         " = " + human_bytes(headroom);
  return headroom < mem_available_bytes ? cg + " (" + meminfo + ")" : meminfo + " (" + cg + ")";
}

uint64_t host_memory_margin(uint64_t available_bytes) { return std::min<uint64_t>(kGiB, available_bytes / 10); }

StatusOr<HostMemory> probe_host_memory(const std::string& root) {
  HostMemory h;
  std::string meminfo;
  const std::string meminfo_path = root + "/proc/meminfo";
  if (!read_text(meminfo_path, &meminfo)) return not_found("cannot read " + meminfo_path);
  uint64_t kb = 0;
  if (!find_key(meminfo, "MemAvailable", &kb)) return not_found(meminfo_path + " has no MemAvailable line (Linux 3.14+)");
  h.mem_available_bytes = kb * 1024;

  std::string self_cgroup, mountinfo;
  if (!read_text(root + "/proc/self/cgroup", &self_cgroup) || !read_text(root + "/proc/self/mountinfo", &mountinfo)) return h;
  for (const char* version : {"v1", "v2"}) {
    CgroupMount m;
    std::string path;
    if (!find_cgroup_path(self_cgroup, version, &path) || !find_mount(mountinfo, version, &m)) continue;
    probe_cgroup(root, version, m, path, &h);
    if (h.cgroup_limit_bytes > 0) break;
  }
  return h;
}

}  // namespace flea
