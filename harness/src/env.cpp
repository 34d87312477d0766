#include "env.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <fstream>
#include <memory>
#include <sstream>
#include <thread>
#include <vector>

#ifdef FLEA_HAVE_HWLOC
#include <hwloc.h>
#endif

namespace flea::harness {
namespace {

std::string trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) s.pop_back();
  size_t i = 0;
  while (i < s.size() && (s[i] == ' ' || s[i] == '\t')) ++i;
  return s.substr(i);
}

// Runs argv (no shell), returns stdout; *rc gets the exit status (-1 when it could not run).
std::string capture(const std::vector<std::string>& argv, int* rc) {
  int fds[2];
  *rc = -1;
  if (pipe(fds) != 0) return "";
  pid_t pid = fork();
  if (pid < 0) {
    close(fds[0]);
    close(fds[1]);
    return "";
  }
  if (pid == 0) {
    dup2(fds[1], 1);
    int devnull = open("/dev/null", O_WRONLY);
    if (devnull >= 0) dup2(devnull, 2);
    close(fds[0]);
    close(fds[1]);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    execvp(args[0], args.data());
    _exit(127);
  }
  close(fds[1]);
  std::string out;
  char buf[4096];
  ssize_t n;
  while ((n = read(fds[0], buf, sizeof(buf))) > 0 || (n < 0 && errno == EINTR)) {
    if (n > 0) out.append(buf, static_cast<size_t>(n));
  }
  close(fds[0]);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
  *rc = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return out;
}

// A field of /proc/meminfo in its own unit (kB for sizes, a count for HugePages_*); -1 if absent.
int64_t meminfo_field(const std::string& field) {
  std::ifstream in("/proc/meminfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(field + ":", 0) == 0) return std::atoll(line.c_str() + field.size() + 1);
  }
  return -1;
}

}  // namespace

std::string read_file_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return "";
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string utc_now(const char* strftime_format) {
  std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[64];
  std::strftime(buf, sizeof(buf), strftime_format, &tm);
  return buf;
}

std::string utc_now_rfc3339() { return utc_now("%Y-%m-%dT%H:%M:%SZ"); }

std::string source_dir() {
#ifdef FLEA_HARNESS_SOURCE_DIR
  return FLEA_HARNESS_SOURCE_DIR;
#else
  return ".";
#endif
}

std::string cpu_governor() {
  std::string g = trim(read_file_text("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor"));
  return g.empty() ? "unknown" : g;
}

std::string storage_device_of(const std::string& path) {
  struct stat st;
  if (path.empty() || stat(path.c_str(), &st) != 0) return "unknown";
  const unsigned maj = major(st.st_dev), min = minor(st.st_dev);
  if (maj == 0) return "unknown (virtual filesystem, dev 0:" + std::to_string(min) + ")";
  char link[4096];
  const std::string sys = "/sys/dev/block/" + std::to_string(maj) + ":" + std::to_string(min);
  ssize_t n = readlink(sys.c_str(), link, sizeof(link) - 1);
  if (n <= 0) return "dev " + std::to_string(maj) + ":" + std::to_string(min);
  link[n] = '\0';
  std::string target(link);
  std::string name = target.substr(target.rfind('/') + 1);
  // A partition's parent directory is the whole disk (…/block/nvme0n1/nvme0n1p2).
  if (access((sys + "/partition").c_str(), F_OK) == 0) {
    std::string parent = target.substr(0, target.rfind('/'));
    name = parent.substr(parent.rfind('/') + 1) + " (" + name + ")";
  }
  return name;
}

int64_t last_level_cache_bytes() {
  int64_t best = 0;
  for (int i = 0; i < 8; ++i) {
    std::string s = trim(read_file_text("/sys/devices/system/cpu/cpu0/cache/index" + std::to_string(i) + "/size"));
    if (s.empty()) continue;
    int64_t v = std::atoll(s.c_str());
    if (s.back() == 'K') v <<= 10;
    else if (s.back() == 'M') v <<= 20;
    best = std::max(best, v);
  }
#ifdef _SC_LEVEL3_CACHE_SIZE
  if (best <= 0) best = std::max<int64_t>(0, sysconf(_SC_LEVEL3_CACHE_SIZE));
#endif
#ifdef FLEA_HAVE_HWLOC
  if (best <= 0) {
    hwloc_topology_t topo;
    if (hwloc_topology_init(&topo) == 0) {
      if (hwloc_topology_load(topo) == 0) {
        for (hwloc_obj_type_t t : {HWLOC_OBJ_L3CACHE, HWLOC_OBJ_L2CACHE}) {
          hwloc_obj_t o = hwloc_get_obj_by_type(topo, t, 0);
          if (o != nullptr && o->attr != nullptr && best <= 0) best = static_cast<int64_t>(o->attr->cache.size);
        }
      }
      hwloc_topology_destroy(topo);
    }
  }
#endif
  return best;
}

Json host_info(const std::string& model_path) {
  Json h;
  char hn[256] = {0};
  gethostname(hn, sizeof(hn) - 1);
  h["hostname"] = hn;
  struct utsname u;
  if (uname(&u) == 0) h["kernel"] = std::string(u.sysname) + " " + u.release + " " + u.machine;
  std::ifstream in("/proc/cpuinfo");
  std::string line, model, flags_line;
  while (std::getline(in, line)) {
    if (model.empty() && line.rfind("model name", 0) == 0) model = trim(line.substr(line.find(':') + 1));
    if (flags_line.empty() && line.rfind("flags", 0) == 0) flags_line = line.substr(line.find(':') + 1);
  }
  h["cpu_model"] = model.empty() ? "unknown" : model;
  h["cpu_cores"] = static_cast<int64_t>(sysconf(_SC_NPROCESSORS_ONLN));
  // The flags that decide which kernels run (the full list is long and says nothing more here).
  Json flags = Json::array();
  std::istringstream fs(flags_line);
  std::string f;
  while (fs >> f) {
    if (f.rfind("avx", 0) == 0 || f == "fma" || f == "f16c" || f.rfind("bmi", 0) == 0 || f.rfind("sse4", 0) == 0 ||
        f.rfind("amx", 0) == 0 || f == "ssse3") {
      flags.push_back(f);
    }
  }
  h["cpu_flags"] = flags;
  const int64_t mem_kb = meminfo_field("MemTotal");
  h["ram_bytes"] = mem_kb >= 0 ? Json(mem_kb * 1024) : Json(nullptr);
  h["cpu_governor"] = cpu_governor();
  h["storage_device"] = storage_device_of(model_path);
  const int64_t llc = last_level_cache_bytes();
  h["llc_bytes"] = llc > 0 ? Json(llc) : Json(nullptr);
  int numa = 0;
#ifdef FLEA_HAVE_HWLOC
  hwloc_topology_t topo;
  if (hwloc_topology_init(&topo) == 0) {
    if (hwloc_topology_load(topo) == 0) {
      numa = hwloc_get_nbobjs_by_type(topo, HWLOC_OBJ_NUMANODE);
      h["physical_cores"] = hwloc_get_nbobjs_by_type(topo, HWLOC_OBJ_CORE);
      h["topology_source"] = "hwloc";
    }
    hwloc_topology_destroy(topo);
  }
#endif
  if (numa <= 0) {
    for (int i = 0; i < 1024; ++i) {
      if (access(("/sys/devices/system/node/node" + std::to_string(i)).c_str(), F_OK) != 0) break;
      numa = i + 1;
    }
    if (!h.contains("topology_source")) h["topology_source"] = "sysfs";
  }
  h["numa_nodes"] = numa > 0 ? numa : 1;
  return h;
}

Json build_info(std::vector<std::string>* warnings) {
  Json b;
  int rc = -1;
  const std::string src = source_dir();
  std::string rev = trim(capture({"git", "-C", src, "rev-parse", "HEAD"}, &rc));
  Json dirty = nullptr;
  if (rc == 0 && !rev.empty()) {
    std::string st = capture({"git", "-C", src, "status", "--porcelain", "--untracked-files=no"}, &rc);
    if (rc == 0) dirty = !trim(st).empty();
  } else {
    rev.clear();
  }
#ifdef FLEA_GIT_REV
  if (rev.empty()) rev = FLEA_GIT_REV;
#endif
  b["git_rev"] = rev.empty() ? Json("unknown") : Json(rev);
  b["git_dirty"] = dirty;
  if (dirty.is_null()) warnings->push_back("git dirty flag unknown: git -C " + src + " failed");
  else if (dirty.get<bool>()) warnings->push_back("working tree has uncommitted changes (git_dirty)");
#ifdef FLEA_BUILD_TYPE
  const std::string bt = FLEA_BUILD_TYPE;
#else
  const std::string bt = "unknown";
#endif
  b["build_type"] = bt;
#ifdef FLEA_HAVE_CUDA
  b["cuda"] = true;
#else
  b["cuda"] = false;
#endif
#ifdef FLEA_HAVE_IO_URING
  b["io_uring"] = true;
#else
  b["io_uring"] = false;
#endif
#ifdef FLEA_CXX_COMPILER
  b["compiler"] = FLEA_CXX_COMPILER;
#else
  b["compiler"] = __VERSION__;
#endif
#ifdef FLEA_CXX_FLAGS_BT
  b["flags"] = trim(FLEA_CXX_FLAGS_BT);
#endif
#ifndef NDEBUG
  warnings->push_back("debug build: the harness was built without NDEBUG, timings are not representative");
#endif
  if (bt != "Release" && bt != "RelWithDebInfo") warnings->push_back("debug build: build type " + bt);
  return b;
}

Json gpu_info() {
  const std::string smi = find_in_path("nvidia-smi");
  if (smi.empty()) return nullptr;
  int rc = -1;
  std::string out = capture({smi, "--query-gpu=name,memory.total,driver_version,pcie.link.gen.max,pcie.link.width.max",
                             "--format=csv,noheader,nounits"}, &rc);
  if (rc != 0 || trim(out).empty()) return nullptr;
  std::string first = out.substr(0, out.find('\n'));
  std::vector<std::string> parts;
  std::stringstream ss(first);
  std::string p;
  while (std::getline(ss, p, ',')) parts.push_back(trim(p));
  Json g;
  g["name"] = parts.size() > 0 ? parts[0] : "unknown";
  g["vram_bytes"] = parts.size() > 1 ? Json(std::atoll(parts[1].c_str()) * 1048576LL) : Json(nullptr);
  g["driver"] = parts.size() > 2 ? Json(parts[2]) : Json(nullptr);
  g["pcie_gen"] = parts.size() > 3 ? Json(std::atoi(parts[3].c_str())) : Json(nullptr);
  g["pcie_width"] = parts.size() > 4 ? Json(std::atoi(parts[4].c_str())) : Json(nullptr);
  g["source"] = "nvidia-smi";
  return g;
}

std::string find_in_path(const std::string& exe) {
  if (exe.find('/') != std::string::npos) return access(exe.c_str(), X_OK) == 0 ? exe : "";
  const char* path = std::getenv("PATH");
  std::string dirs = path ? path : "/usr/bin:/bin";
  std::stringstream ss(dirs);
  std::string d;
  while (std::getline(ss, d, ':')) {
    std::string cand = (d.empty() ? "." : d) + "/" + exe;
    if (access(cand.c_str(), X_OK) == 0) return cand;
  }
  for (const char* d2 : {"/usr/bin", "/usr/sbin", "/usr/local/bin"}) {
    std::string cand = std::string(d2) + "/" + exe;
    if (access(cand.c_str(), X_OK) == 0) return cand;
  }
  return "";
}

bool drop_page_cache(const std::string& path, double* resident_fraction, std::string* why) {
  *resident_fraction = -1;
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    *why = std::string("open failed: ") + std::strerror(errno);
    return false;
  }
  struct stat st;
  fstat(fd, &st);
  fdatasync(fd);
  int rc = posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
  if (rc != 0) {
    *why = std::string("posix_fadvise(DONTNEED) failed: ") + std::strerror(rc);
    close(fd);
    return false;
  }
  bool ok = true;
  if (st.st_size > 0) {
    void* m = mmap(nullptr, static_cast<size_t>(st.st_size), PROT_READ, MAP_SHARED, fd, 0);
    if (m == MAP_FAILED) {
      *why = std::string("mmap for mincore failed: ") + std::strerror(errno);
      close(fd);
      return false;
    }
    const long page = sysconf(_SC_PAGESIZE);
    const size_t pages = (static_cast<size_t>(st.st_size) + page - 1) / page;
    std::vector<unsigned char> vec(pages);
    if (mincore(m, static_cast<size_t>(st.st_size), vec.data()) == 0) {
      size_t resident = 0;
      for (unsigned char v : vec) resident += v & 1;
      *resident_fraction = static_cast<double>(resident) / static_cast<double>(pages);
      // A few pages can stay (mapped by another process); more than 1% means the drop did not work.
      if (*resident_fraction > 0.01) {
        ok = false;
        *why = "still " + std::to_string(static_cast<int>(*resident_fraction * 100)) + "% resident after fadvise(DONTNEED)";
      }
    } else {
      *why = std::string("mincore failed: ") + std::strerror(errno);
      ok = false;
    }
    munmap(m, static_cast<size_t>(st.st_size));
  }
  close(fd);
  return ok;
}

namespace {

constexpr const char* kNrHugepages = "/proc/sys/vm/nr_hugepages";
constexpr const char* kHugetlbLock = "/tmp/flea-hugetlb.lock";

int64_t read_nr_hugepages() {
  std::ifstream f(kNrHugepages);
  int64_t n = -1;
  if (!(f >> n)) return -1;
  return n;
}

bool write_nr_hugepages(int64_t n) {
  std::ofstream f(kNrHugepages);
  f << n << "\n";
  f.flush();
  return static_cast<bool>(f);
}

}  // namespace

HugetlbReservation::HugetlbReservation(uint64_t bytes) {
  // One reservation at a time on this machine (harness processes, bench/io_vs_fio.py): taken for
  // the object's lifetime, released by the kernel if the process dies.
  lock_fd_ = ::open(kHugetlbLock, O_RDWR | O_CREAT | O_CLOEXEC, 0666);
  if (lock_fd_ >= 0) flock(lock_fd_, LOCK_EX);
  const int64_t page_kb = meminfo_field("Hugepagesize");
  const int64_t free_pages = meminfo_field("HugePages_Free");
  if (page_kb <= 0 || free_pages < 0) {
    why_ = "no hugetlb pool in /proc/meminfo";
    return;
  }
  const uint64_t page = static_cast<uint64_t>(page_kb) * 1024;
  const int64_t need = static_cast<int64_t>((bytes + page - 1) / page);
  if (free_pages >= need) {
    ok_ = true;
    return;
  }
  const int64_t nr = read_nr_hugepages();
  if (nr < 0) {
    why_ = std::string("cannot read ") + kNrHugepages;
    return;
  }
  if (geteuid() != 0) {
    why_ = std::to_string(free_pages) + " hugetlb pages free, " + std::to_string(need) +
           " needed, and only root may raise " + kNrHugepages;
    return;
  }
  if (!write_nr_hugepages(nr + (need - free_pages))) {
    why_ = std::string("writing ") + kNrHugepages + " failed";
    return;
  }
  // The kernel may grant fewer than asked (fragmented memory): count what it really added.
  added_ = std::max<int64_t>(0, read_nr_hugepages() - nr);
  if (meminfo_field("HugePages_Free") < need) {
    why_ = "the kernel could not find " + std::to_string(need) + " free huge pages (memory fragmented)";
    return;
  }
  ok_ = true;
}

HugetlbReservation::~HugetlbReservation() {
  // Give back what we added (not "restore the old count": someone may have changed it meanwhile).
  if (added_ > 0) {
    const int64_t nr = read_nr_hugepages();
    if (nr >= added_) write_nr_hugepages(nr - added_);
  }
  if (lock_fd_ >= 0) ::close(lock_fd_);  // releases the flock
}

Json fio_ceiling(const std::string& fio, const std::string& path, const std::string& io, const FioOptions& o) {
  Json e;
  e["path"] = path;
  e["io"] = io;
  struct stat st;
  int64_t size = stat(path.c_str(), &st) == 0 ? st.st_size : 0;
  int64_t bs = o.block_bytes;
  while (bs > 4096 && bs > size) bs /= 2;
  const int64_t fio_size = size / bs * bs;
  std::string engine = "psync", direct = "0";
  int depth = 1;
  if (io == "odirect") direct = "1";
  else if (io == "io_uring") { engine = "io_uring"; direct = "1"; depth = o.iodepth; }
  else if (io == "mmap") engine = "mmap";
  e["block_bytes"] = bs;
  e["iodepth"] = depth;
  e["ioengine"] = engine;
  e["direct"] = direct == "1";
  e["bytes"] = fio_size;
  bool all_dropped = true;
  std::string drop_why;
  char runtime[32];
  std::snprintf(runtime, sizeof(runtime), "%gs", o.runtime_s);
  // o.samples repetitions with one kind of buffer: {samples_gb_s, read_gb_s (median), error}.
  auto measure = [&](const std::string& mem) {
    Json m;
    Json samples = Json::array();
    std::string err;
    for (int i = 0; i < o.samples; ++i) {
      double resident = 0;
      std::string why;
      if (!drop_page_cache(path, &resident, &why)) {
        all_dropped = false;
        drop_why = why;
      }
      int rc = -1;
      std::string out = capture({fio, "--name=ceiling", "--filename=" + path, "--readonly", "--rw=read",
                                 "--bs=" + std::to_string(bs), "--size=" + std::to_string(fio_size),
                                 "--ioengine=" + engine, "--direct=" + direct, "--iodepth=" + std::to_string(depth),
                                 "--invalidate=1", "--runtime=" + std::string(runtime), "--output-format=json",
                                 mem == "hugetlb" ? "--mem=mmaphuge" : "--mem=malloc"},
                                &rc);
      const std::string what = " (" + engine + ", direct=" + direct + ", mem=" + mem + ")";
      if (rc != 0) {
        err = "fio exited " + std::to_string(rc) + what;
        break;
      }
      try {
        // fio may print notes before the JSON object.
        auto j = nlohmann::json::parse(out.substr(std::min(out.size(), out.find('{'))));
        const double bw = j["jobs"][0]["read"]["bw_bytes"].get<double>();
        const int jerr = j["jobs"][0].value("error", 0);
        if (jerr != 0 || bw <= 0) {
          err = "fio job error " + std::to_string(jerr) + what;
          break;
        }
        samples.push_back(bw / 1e9);
      } catch (const std::exception& ex) {
        err = std::string("cannot parse fio JSON: ") + ex.what();
        break;
      }
    }
    m["samples_gb_s"] = samples;
    if (!samples.empty()) {
      std::vector<double> v;
      for (const auto& x : samples) v.push_back(x.get<double>());
      std::sort(v.begin(), v.end());
      m["read_gb_s"] = v[v.size() / 2];
    } else {
      m["read_gb_s"] = nullptr;
    }
    m["error"] = err.empty() ? Json(nullptr) : Json(err);
    return m;
  };
  // fio's own buffers (malloc, 4 KiB pages): the comparison the issue defines, "same block size,
  // direct I/O and queue depth"; its median is read_gb_s and fraction_of_fio's denominator.
  std::string primary = o.mem == "hugetlb" ? "hugetlb" : "malloc";
  Json hugetlb = nullptr;
  if (o.mem != "malloc") {
    // fio's buffer (iodepth x bs) on hugetlb pages, twice over: fio rounds and aligns it.
    HugetlbReservation pool(2 * static_cast<uint64_t>(bs) * static_cast<uint64_t>(depth) + (4u << 20));
    if (pool.ok()) {
      hugetlb = measure("hugetlb");
    } else {
      hugetlb = {{"samples_gb_s", Json::array()}, {"read_gb_s", nullptr}, {"error", "no hugetlb pages: " + pool.why()}};
    }
    if (pool.added_pages() > 0) hugetlb["pool_pages_added"] = pool.added_pages();
  }
  Json m = primary == "hugetlb" ? hugetlb : measure("malloc");
  e["buffer"] = primary;
  e["samples_gb_s"] = m["samples_gb_s"];
  e["read_gb_s"] = m["read_gb_s"];
  e["error"] = m["error"];
  // The ceiling the floors use: the best fio did with any buffer (a floor must not be beatable).
  double best = m["read_gb_s"].is_number() ? m["read_gb_s"].get<double>() : 0.0;
  if (o.mem == "both") {
    e["hugetlb"] = hugetlb;
    if (hugetlb["read_gb_s"].is_number()) best = std::max(best, hugetlb["read_gb_s"].get<double>());
  }
  e["ceiling_gb_s"] = best > 0 ? Json(best) : Json(nullptr);
  e["cache_dropped"] = all_dropped;
  if (!all_dropped) e["cache_drop_error"] = drop_why;
  return e;
}

Json h2d_ceiling() {
  // The harness is not linked against the CUDA runtime: pinned H2D is measured by the engine
  // (`flea bench` on a CUDA build); without a GPU there is nothing to measure.
  return nullptr;
}

}  // namespace flea::harness
