// The Streamer: one WeightProvider for every plan and backend.
//
// Layer life cycle (telemetry records each step):
//   transient --(prefetch or demand)--> loading --(reads done)--> staged --acquire--> active
//   --release--> evicted (slot back to the ring) | cached (kept in its own buffer)
// Resident layers are read once at construction and go active <-> resident.
//
// Memory: globals + norms (one buffer), resident layers (one buffer each), cached layers (one
// buffer each), ring_slots staging buffers of slot_bytes. With --io mmap nothing is copied: the
// "buffers" are the mapping, loading means faulting the layer's pages in on an I/O thread, and
// eviction is MADV_DONTNEED, so the ring bounds how much of the file is mapped-in at once.
#include <algorithm>
#include <condition_variable>
#include <deque>
#include <numeric>
#include <random>
#include <thread>

#include "io/aligned_buffer.h"
#include "io/page_cache.h"
#include "residency/provider.h"

namespace flea {

namespace {

enum class Rt { kIdle, kQueued, kLoading, kStaged, kActive, kCachedReady, kError };

struct LayerRuntime {
  Rt state = Rt::kIdle;
  int slot = -1;           // ring slot while queued/loading/staged/active (streamed layers)
  int refs = 0;            // acquire() calls not yet released
  bool prefetched = false; // the read was issued before acquire() asked for it
  int64_t active_since_ns = 0;
  Status error;
};

struct Job {
  int layer;
  int64_t queued_ns;
  int expert_slot = -1;  // >= 0: read that expert slot's expert instead of the layer
};

// Expert-granular residency: one buffer holding one expert (gate, up and down slabs) of one layer.
// Layer l's cache owns slots [first, first + its expert_cache); the scratch slots after every
// layer's cache hold routed experts that are not cached, and are emptied on release.
enum class Xs { kEmpty, kQueued, kLoading, kReady, kError };
struct ExpertSlot {
  int layer = -1, expert = -1;
  Xs state = Xs::kEmpty;
  bool pinned = false;  // routed to in the step being computed
  uint64_t last_use = 0;
  Status error;
  uint8_t* buf = nullptr;  // null with --io mmap (the slabs are used in place)
};

class StreamingProvider final : public WeightProvider {
 public:
  StreamingProvider(const Plan& plan, const ResidencyOptions& opts, std::unique_ptr<io::IoBackend> backend,
                    Telemetry* telemetry)
      : plan_(plan), opts_(opts), backend_(std::move(backend)), tel_(telemetry), rt_(plan.layers.size()) {
    mapped_ = backend_->mapping();
  }

  ~StreamingProvider() override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    for (std::thread& t : threads_) t.join();
  }

  std::string name() const override { return "streamer(" + plan_.residency + "," + backend_->name() + ")"; }

  void wait_idle() override {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] {
      return stop_ || (queue_.empty() &&
                       std::none_of(rt_.begin(), rt_.end(), [](const LayerRuntime& r) { return r.state == Rt::kLoading; }) &&
                       std::none_of(xslots_.begin(), xslots_.end(), [](const ExpertSlot& x) { return x.state == Xs::kLoading; }));
    });
  }
  std::vector<std::string> warnings() const { return backend_->warnings(); }
  ProviderBuffers buffers() const {
    ProviderBuffers b = buffers_;
    b.anon_huge_bytes = io::process_anon_huge_bytes();
    return b;
  }

  Status init(const ModelLayout& layout) {
    FLEA_RETURN_IF_ERROR(load_fixed(layout));
    for (const LayerPlan& lp : plan_.layers) {
      base_.push_back(nullptr);
      if (lp.placement == Placement::kStreamed || lp.placement == Placement::kElsewhere || mapped_ != nullptr) continue;
      io::AlignedBuffer buf;
      if (!allocate(lp.buffer_bytes, &buf))
        return resource_exhausted("cannot allocate " + std::to_string(lp.buffer_bytes) + " bytes for layer " +
                                  std::to_string(lp.layer));
      base_.back() = buf.data();
      layer_bufs_.push_back(std::move(buf));
    }
    if (mapped_ == nullptr) {
      for (int s = 0; s < plan_.ring_slots; ++s) {
        io::AlignedBuffer buf;
        if (!allocate(plan_.slot_bytes, &buf))
          return resource_exhausted("cannot allocate staging slot of " + std::to_string(plan_.slot_bytes) + " bytes");
        slots_.push_back(std::move(buf));
      }
    }
    FLEA_RETURN_IF_ERROR(init_experts());
    if (mapped_ == nullptr) {
      std::vector<std::pair<uint8_t*, uint64_t>> reg;
      for (io::AlignedBuffer& b : slots_) reg.emplace_back(b.data(), b.size());
      for (io::AlignedBuffer& b : expert_bufs_) reg.emplace_back(b.data(), b.size());
      if (!reg.empty()) backend_->register_buffers(reg);
    }
    slot_owner_.assign(plan_.ring_slots, -1);
    // Resident layers: read now, synchronously.
    for (const LayerPlan& lp : plan_.layers) {
      if (lp.placement != Placement::kResident) continue;
      tel(lp.layer, LayerState::kLoading);
      FLEA_RETURN_IF_ERROR(load_layer(lp.layer, 0));
      tel(lp.layer, LayerState::kResident);
    }
    last_acquired_ = static_cast<int>(rt_.size()) - 1;  // so layer 0 is the next one
    const int n_threads = plan_.n_streamed + plan_.n_cached > 0 ? std::max(1, opts_.io_threads) : 0;
    for (int i = 0; i < n_threads; ++i) threads_.emplace_back([this, i] { io_thread(i + 1); });
    if (tel_ != nullptr) tel_->sample_rss();
    return ok_status();
  }

  // Start reading the first layers of the first token now (with prefetch), so the first acquire
  // does not wait for the whole read. `acquire_limit` >= 0: no reads past that many acquires.
  void start(int64_t acquire_limit) {
    std::lock_guard<std::mutex> lock(mu_);
    acquire_limit_ = acquire_limit;
    if (opts_.prefetch > 0 && !rt_.empty()) schedule_locked(0, opts_.prefetch + 1, /*inclusive=*/true);
  }

  const uint8_t* global(GlobalTensor t) override { return globals_[static_cast<int>(t)]; }

  int expert_capacity(int il) const override {
    const LayerPlan& lp = plan_.layers[static_cast<size_t>(il)];
    return lp.experts_streamed ? lp.expert_cache + plan_.expert_scratch_slots : 0;
  }

  // Hits are pinned first so that filling the misses cannot evict them; misses are read in
  // parallel (front of the I/O queue, each expert its own job) and waited for together.
  Status acquire_experts(int il, const std::vector<int>& ids, std::vector<ExpertSlabs>* out) override {
    FLEA_CHECK(il >= 0 && il < static_cast<int>(rt_.size()), "acquire_experts: layer out of range");
    const LayerPlan& lp = plan_.layers[static_cast<size_t>(il)];
    if (!lp.experts_streamed)
      return invalid_argument("layer " + std::to_string(il) + " does not stream its experts one by one");
    if (static_cast<int>(ids.size()) > expert_capacity(il))
      return invalid_argument("layer " + std::to_string(il) + ": " + std::to_string(ids.size()) +
                              " experts asked for at once; at most " + std::to_string(expert_capacity(il)));
    std::unique_lock<std::mutex> lock(mu_);
    FLEA_CHECK(rt_[il].refs > 0, "acquire_experts of layer " + std::to_string(il) + " that was not acquired");
    ++expert_clock_;
    std::vector<int> slot(ids.size(), -1);
    for (size_t i = 0; i < ids.size(); ++i) {
      const int e = ids[i];
      if (e < 0 || e >= lp.n_expert)
        return out_of_range("layer " + std::to_string(il) + ": expert " + std::to_string(e) + " outside [0, " +
                            std::to_string(lp.n_expert) + ")");
      ++expert_freq_[il][e];
      const int s = expert_where_[il][e];
      if (s < 0 || expert_slots_error(s)) continue;
      slot[i] = s;
      xslots_[s].pinned = true;
      xslots_[s].last_use = expert_clock_;
      if (tel_ != nullptr) tel_->count_expert(il, /*hit=*/true);
    }
    for (size_t i = 0; i < ids.size(); ++i) {
      if (slot[i] >= 0) continue;
      const int s = pick_expert_slot_locked(il, ids[i]);
      FLEA_CHECK(s >= 0, "no expert buffer free although the request fits expert_capacity");
      ExpertSlot& x = xslots_[s];
      x.layer = il;
      x.expert = ids[i];
      x.pinned = true;
      x.last_use = expert_clock_;
      x.state = Xs::kQueued;
      expert_where_[il][ids[i]] = s;
      slot[i] = s;
      queue_.push_front({il, now(), s});
      if (tel_ != nullptr) tel_->count_expert(il, /*hit=*/false);
    }
    cv_.notify_all();
    auto settled = [&] {
      return std::all_of(slot.begin(), slot.end(), [&](int s) { return xslots_[s].state == Xs::kReady || xslots_[s].state == Xs::kError; });
    };
    if (!settled()) {
      const int64_t t0 = now();
      cv_.wait(lock, settled);
      if (tel_ != nullptr) tel_->add_stall(il, t0, now());
    }
    for (int s : slot) {
      if (xslots_[s].state != Xs::kError) continue;
      const Status st = xslots_[s].error;
      release_experts_locked(il);
      empty_expert_slot_locked(s);
      return st;
    }
    out->clear();
    for (int s : slot) {
      const ExpertSlot& x = xslots_[s];
      std::array<const uint8_t*, 3> p{};
      if (mapped_ != nullptr) {  // the slabs in place
        for (size_t m = 0; m < 3; ++m)
          p[m] = mapped_ + lp.expert_tensor_offset[m] + static_cast<uint64_t>(x.expert) * lp.expert_slab_bytes[m];
      } else {
        const ExpertRead r = expert_read(lp, x.expert);
        for (size_t m = 0; m < 3; ++m) p[m] = x.buf + r.data_offset[m];
      }
      out->push_back({p[0], p[1], p[2]});
    }
    return ok_status();
  }

  void release_experts(int il) override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      release_experts_locked(il);
    }
    cv_.notify_all();
  }

  StatusOr<LayerWeights> acquire(int il) override {
    FLEA_CHECK(il >= 0 && il < static_cast<int>(rt_.size()), "acquire: layer out of range");
    const LayerPlan& lp = plan_.layers[il];
    if (lp.placement == Placement::kElsewhere)
      return invalid_argument("layer " + std::to_string(il) + " belongs to another pipeline stage (this one has [" +
                                 std::to_string(plan_.layer_begin) + ", " + std::to_string(plan_.layer_end) + "))");
    std::unique_lock<std::mutex> lock(mu_);
    LayerRuntime& r = rt_[il];
    if (r.state != Rt::kActive) {
      last_acquired_ = il;
      ++acquires_done_;
    }
    if (lp.placement == Placement::kResident || r.state == Rt::kActive) {
      mark_active_locked(il);
      return weights(il);
    }
    if (r.state == Rt::kCachedReady) {
      mark_active_locked(il);
      schedule_locked(il, opts_.prefetch, /*inclusive=*/false);
      return weights(il);
    }
    if (r.state == Rt::kError) {
      Status st = r.error;
      reset_locked(il);
      return st;
    }
    const bool hit = r.state == Rt::kQueued || r.state == Rt::kLoading || r.state == Rt::kStaged;
    if (tel_ != nullptr) tel_->count_prefetch(hit);
    if (!hit) {
      FLEA_RETURN_IF_ERROR(issue_locked(lock, il, /*demand=*/true));
    }
    // The next layers can start loading while we wait for this one.
    schedule_locked(il, opts_.prefetch, /*inclusive=*/false);
    if (r.state != Rt::kStaged && r.state != Rt::kError) {
      const int64_t t0 = now();
      cv_.wait(lock, [&] { return r.state == Rt::kStaged || r.state == Rt::kError; });
      if (tel_ != nullptr) tel_->add_stall(il, t0, now());
    }
    if (r.state == Rt::kError) {
      Status st = r.error;
      reset_locked(il);
      return st;
    }
    mark_active_locked(il);
    return weights(il);
  }

  void release(int il) override {
    FLEA_CHECK(il >= 0 && il < static_cast<int>(rt_.size()), "release: layer out of range");
    const LayerPlan& lp = plan_.layers[il];
    {
      std::lock_guard<std::mutex> lock(mu_);
      LayerRuntime& r = rt_[il];
      FLEA_CHECK(r.refs > 0, "release of layer " + std::to_string(il) + " that was not acquired");
      if (--r.refs > 0) return;
      if (lp.experts_streamed) release_experts_locked(il);
      if (tel_ != nullptr) tel_->add_compute(il, r.active_since_ns, now());
      if (lp.placement == Placement::kResident) {
        r.state = Rt::kIdle;
        tel(il, LayerState::kResident);
      } else {
        if (lp.placement == Placement::kCached) {
          r.state = Rt::kCachedReady;
          tel(il, LayerState::kCached);
        } else {
          evict_locked(il);
        }
        // A freed slot goes to the layer prefetch+1 ahead right away.
        if (opts_.prefetch > 0) schedule_locked(next_needing(il), opts_.prefetch + 1, /*inclusive=*/true);
      }
    }
    cv_.notify_all();
    if (tel_ != nullptr) tel_->sample_rss();
  }

 private:
  int64_t now() const { return tel_ != nullptr ? tel_->now_ns() : 0; }
  void tel(int layer, LayerState s, uint64_t bytes = 0) {
    if (tel_ != nullptr) tel_->record(layer, s, bytes);
  }

  bool needs_io_locked(int il) const {
    const Placement p = plan_.layers[il].placement;
    if (p == Placement::kResident || p == Placement::kElsewhere) return false;
    if (p == Placement::kCached) return rt_[il].state != Rt::kCachedReady && rt_[il].state != Rt::kActive;
    return true;
  }

  // The layer after `il` in visiting order that will need I/O (cyclic; -1 when none does).
  int next_needing(int il) const {
    const int n = static_cast<int>(rt_.size());
    for (int k = 1; k <= n; ++k) {
      const int j = (il + k) % n;
      const Placement p = plan_.layers[j].placement;
      if (p == Placement::kStreamed || (p == Placement::kCached && rt_[j].state != Rt::kCachedReady)) return j;
    }
    return -1;
  }

  // Issues reads for up to `count` layers needing I/O, in cyclic order from `from` (itself
  // included when `inclusive`), while ring slots are free. Never blocks.
  void schedule_locked(int from, int count, bool inclusive) {
    if (from < 0 || count <= 0) return;
    const int n = static_cast<int>(rt_.size());
    int considered = 0;
    for (int k = inclusive ? 0 : 1; k < n + (inclusive ? 0 : 1) && considered < count; ++k) {
      const int j = (from + k) % n;
      if (!needs_io_locked(j)) continue;
      ++considered;
      if (acquire_limit_ >= 0) {
        const int off = j == last_acquired_ ? n : distance(last_acquired_, j);
        if (acquires_done_ + off > acquire_limit_) return;
      }
      LayerRuntime& r = rt_[j];
      if (r.state != Rt::kIdle) continue;  // already queued/loading/staged/active
      if (plan_.layers[j].placement == Placement::kStreamed) {
        const int s = free_slot_locked();
        if (s < 0) return;
        assign_slot_locked(j, s);
      }
      r.prefetched = true;
      enqueue_locked(j, /*front=*/false);
    }
  }

  int free_slot_locked() const {
    for (size_t s = 0; s < slot_owner_.size(); ++s)
      if (slot_owner_[s] < 0) return static_cast<int>(s);
    return -1;
  }
  void assign_slot_locked(int il, int s) {
    slot_owner_[s] = il;
    rt_[il].slot = s;
  }

  void enqueue_locked(int il, bool front) {
    rt_[il].state = Rt::kQueued;
    if (front) queue_.push_front({il, now()});
    else queue_.push_back({il, now()});
    cv_.notify_all();
  }

  // Demand load of `il` (a prefetch miss): find it a slot, evicting a prefetched layer that is not
  // in use if the ring is full (waiting for an in-flight read to finish when that is all there is).
  Status issue_locked(std::unique_lock<std::mutex>& lock, int il, bool demand) {
    LayerRuntime& r = rt_[il];
    r.prefetched = false;
    if (plan_.layers[il].placement == Placement::kStreamed) {
      for (;;) {
        int s = free_slot_locked();
        if (s < 0) {
          // Victim: queued or staged (not loading, not active), the one furthest from being used.
          int victim = -1;
          bool any_loading = false;
          for (size_t k = 0; k < slot_owner_.size(); ++k) {
            const int o = slot_owner_[k];
            if (o < 0) continue;
            if (rt_[o].state == Rt::kLoading) any_loading = true;
            if (rt_[o].state == Rt::kQueued || rt_[o].state == Rt::kStaged || rt_[o].state == Rt::kError) {
              if (victim < 0 || distance(il, o) > distance(il, victim)) victim = o;
            }
          }
          if (victim >= 0) {
            if (rt_[victim].state == Rt::kQueued) remove_from_queue_locked(victim);
            evict_locked(victim);
            continue;
          }
          if (!any_loading)
            return resource_exhausted("layer " + std::to_string(il) + ": all " + std::to_string(slot_owner_.size()) +
                                      " staging slots hold acquired layers; release a layer first or raise --prefetch");
          cv_.wait(lock);
          continue;
        }
        assign_slot_locked(il, s);
        break;
      }
    }
    enqueue_locked(il, /*front=*/demand);
    return ok_status();
  }

  int distance(int from, int to) const {
    const int n = static_cast<int>(rt_.size());
    return ((to - from) % n + n) % n;
  }

  void remove_from_queue_locked(int il) {
    queue_.erase(std::remove_if(queue_.begin(), queue_.end(), [il](const Job& j) { return j.layer == il; }),
                 queue_.end());
  }

  void evict_locked(int il) {
    LayerRuntime& r = rt_[il];
    if (r.slot >= 0) slot_owner_[r.slot] = -1;
    r.slot = -1;
    r.state = Rt::kIdle;
    r.refs = 0;
    if (mapped_ != nullptr)
      for (const ReadSpan& s : plan_.layers[il].spans) io::mmap_advise_dontneed(backend_.get(), s.file_offset, s.length);
    tel(il, LayerState::kEvicted);
  }

  void reset_locked(int il) {
    LayerRuntime& r = rt_[il];
    if (r.slot >= 0) slot_owner_[r.slot] = -1;
    r.slot = -1;
    r.state = Rt::kIdle;
    r.error = ok_status();
    cv_.notify_all();
  }

  void mark_active_locked(int il) {
    LayerRuntime& r = rt_[il];
    if (r.refs++ == 0) {
      r.state = Rt::kActive;
      r.active_since_ns = now();
      tel(il, LayerState::kActive);
    }
  }

  uint8_t* dest_locked(int il) {
    const LayerPlan& lp = plan_.layers[il];
    if (lp.placement == Placement::kStreamed) return slots_.empty() ? nullptr : slots_[rt_[il].slot].data();
    return base_[il];
  }

  void io_thread(int tid) {
    std::unique_lock<std::mutex> lock(mu_);
    for (;;) {
      cv_.wait(lock, [&] { return stop_ || !queue_.empty(); });
      if (stop_) return;
      const Job job = queue_.front();
      queue_.pop_front();
      if (job.expert_slot >= 0) {
        ExpertSlot& x = xslots_[static_cast<size_t>(job.expert_slot)];
        x.state = Xs::kLoading;
        const int e = x.expert;
        lock.unlock();
        Status st = load_expert(job.layer, e, x.buf, tid);
        lock.lock();
        x.state = st.ok() ? Xs::kReady : Xs::kError;
        x.error = st;
        cv_.notify_all();
        continue;
      }
      LayerRuntime& r = rt_[job.layer];
      r.state = Rt::kLoading;
      uint8_t* dst = dest_locked(job.layer);
      lock.unlock();
      tel(job.layer, LayerState::kLoading);
      Status st = load_into(job.layer, dst, tid);
      lock.lock();
      if (st.ok()) {
        r.state = Rt::kStaged;
      } else {
        r.state = Rt::kError;
        r.error = st;
      }
      cv_.notify_all();
    }
  }

  // Reads (or, mmap, faults in) `spans` into `dst` for layer `il`, checking the file did not change
  // before and after; returns the bytes read (spans past EOF end there).
  template <class Spans>
  StatusOr<uint64_t> read_spans(const Spans& spans, uint8_t* dst, int il) {
    const uint64_t size = backend_->opened_stat().size;
    uint64_t needed_end = 0;
    for (const ReadSpan& s : spans) needed_end = std::max(needed_end, std::min(s.file_offset + s.length, size));
    FLEA_RETURN_IF_ERROR(backend_->check_unchanged(needed_end, il));
    uint64_t bytes = 0;
    for (const ReadSpan& s : spans) {
      const uint64_t need = std::min(s.length, size - s.file_offset);
      if (mapped_ != nullptr) {
        FLEA_RETURN_IF_ERROR(io::mmap_prefault(backend_.get(), s.file_offset, need, il));
        bytes += need;
        continue;
      }
      const io::ReadRequest req{s.file_offset, s.length, dst + s.buffer_offset, il};
      FLEA_ASSIGN_OR_RETURN(uint64_t got, backend_->read(req));
      if (got < need)
        return data_loss(backend_->describe(req, "file ended after " + std::to_string(got) + " of " +
                                                     std::to_string(need) + " bytes (truncated during the run?)"));
      bytes += got;
    }
    FLEA_RETURN_IF_ERROR(backend_->check_unchanged(needed_end, il));
    return bytes;
  }

  // Layer `il`'s spans (its dense part when its experts stream one by one).
  Status load_into(int il, uint8_t* dst, int tid) {
    const int64_t t0 = now();
    FLEA_ASSIGN_OR_RETURN(uint64_t bytes, read_spans(plan_.layers[static_cast<size_t>(il)].spans, dst, il));
    if (tel_ != nullptr) {
      tel_->add_io(il, tid, t0, now(), bytes);
      tel_->record(il, LayerState::kStaged, bytes);
    }
    return ok_status();
  }

  Status load_layer(int il, int tid) { return load_into(il, base_[il], tid); }

  // Expert `e` of layer `il`: its three slabs.
  Status load_expert(int il, int e, uint8_t* dst, int tid) {
    const int64_t t0 = now();
    FLEA_ASSIGN_OR_RETURN(uint64_t bytes, read_spans(expert_read(plan_.layers[static_cast<size_t>(il)], e).spans, dst, il));
    if (tel_ != nullptr) {
      tel_->add_io(il, tid, t0, now(), bytes);
      tel_->add_expert_bytes(il, bytes);
    }
    return ok_status();
  }

  Status init_experts() {
    if (plan_.n_expert_layers == 0) return ok_status();
    expert_where_.assign(plan_.layers.size(), {});
    expert_freq_.assign(plan_.layers.size(), {});
    expert_first_.assign(plan_.layers.size(), -1);
    int n = 0;
    for (const LayerPlan& lp : plan_.layers) {
      if (!lp.experts_streamed) continue;
      expert_where_[lp.layer].assign(static_cast<size_t>(lp.n_expert), -1);
      expert_freq_[lp.layer].assign(static_cast<size_t>(lp.n_expert), 0);
      expert_first_[lp.layer] = n;
      n += lp.expert_cache;
    }
    xslots_.resize(static_cast<size_t>(n + plan_.expert_scratch_slots));
    for (size_t s = 0; s < xslots_.size(); ++s) {
      if (mapped_ != nullptr) continue;
      io::AlignedBuffer buf;
      if (!allocate(plan_.expert_slot_bytes, &buf))
        return resource_exhausted("cannot allocate expert buffer of " + std::to_string(plan_.expert_slot_bytes) + " bytes");
      xslots_[s].buf = buf.data();
      expert_bufs_.push_back(std::move(buf));
    }
    return ok_status();
  }

  bool expert_slots_error(int s) const { return xslots_[static_cast<size_t>(s)].state == Xs::kError; }

  // A buffer for expert `e` of layer `il`, not routed to yet in this step: an empty slot of the
  // layer's cache, else its least recently used (lru) / least often routed (lfu) cached expert not
  // in use, else a scratch slot. Under lfu an expert routed less often than the one it would evict
  // goes to a scratch slot instead, when there is one. -1 when everything is pinned.
  int pick_expert_slot_locked(int il, int e) {
    const int first = expert_first_[il], c = plan_.layers[static_cast<size_t>(il)].expert_cache;
    const bool lfu = plan_.expert_policy == "lfu";
    int victim = -1;
    for (int s = first; s < first + c; ++s) {
      const ExpertSlot& x = xslots_[static_cast<size_t>(s)];
      if (x.state == Xs::kEmpty) return s;
      if (x.pinned || x.state == Xs::kQueued || x.state == Xs::kLoading) continue;
      if (victim < 0) {
        victim = s;
        continue;
      }
      const ExpertSlot& v = xslots_[static_cast<size_t>(victim)];
      const int64_t fx = expert_freq_[il][x.expert], fv = expert_freq_[il][v.expert];
      if (lfu ? (fx < fv || (fx == fv && x.last_use < v.last_use)) : x.last_use < v.last_use) victim = s;
    }
    auto free_scratch = [&] {
      for (size_t s = scratch_begin(); s < xslots_.size(); ++s)
        if (xslots_[s].state == Xs::kEmpty) return static_cast<int>(s);
      return -1;
    };
    if (victim >= 0 && lfu && expert_freq_[il][xslots_[victim].expert] >= expert_freq_[il][e]) {
      const int s = free_scratch();
      if (s >= 0) return s;
    }
    if (victim >= 0) {
      empty_expert_slot_locked(victim);
      return victim;
    }
    return free_scratch();
  }

  size_t scratch_begin() const { return xslots_.size() - static_cast<size_t>(plan_.expert_scratch_slots); }

  void empty_expert_slot_locked(int s) {
    ExpertSlot& x = xslots_[static_cast<size_t>(s)];
    if (x.layer >= 0 && expert_where_[x.layer][x.expert] == s) expert_where_[x.layer][x.expert] = -1;
    if (mapped_ != nullptr && x.layer >= 0) {
      for (const ReadSpan& sp : expert_read(plan_.layers[static_cast<size_t>(x.layer)], x.expert).spans)
        io::mmap_advise_dontneed(backend_.get(), sp.file_offset, sp.length);
    }
    x.layer = x.expert = -1;
    x.state = Xs::kEmpty;
    x.pinned = false;
    x.error = ok_status();
  }

  // Unpins the layer's experts; scratch slots are emptied (not cached).
  void release_experts_locked(int il) {
    for (size_t s = 0; s < xslots_.size(); ++s) {
      ExpertSlot& x = xslots_[s];
      if (x.layer != il || !x.pinned) continue;
      if (x.state == Xs::kQueued || x.state == Xs::kLoading) continue;  // an abandoned read: settles later
      x.pinned = false;
      if (s >= scratch_begin()) empty_expert_slot_locked(static_cast<int>(s));
    }
  }

  LayerWeights weights(int il) {
    const LayerPlan& lp = plan_.layers[il];
    LayerWeights w;
    const uint8_t* base = mapped_ != nullptr ? nullptr : (lp.placement == Placement::kStreamed
                                                              ? slots_[rt_[il].slot].data() : base_[il]);
    for (int t = 0; t < kLayerTensorCount; ++t) {
      // Norms and biases from the fixed buffer (null when absent); null for the expert tensors of
      // a layer that streams experts one by one (acquire_experts supplies them).
      if (lp.buffer_offset[t] == kNotInBuffer) w.data[t] = norms_[il][t];
      else if (mapped_ != nullptr) w.data[t] = mapped_ + tensor_offset_[il][t];
      else w.data[t] = base + lp.buffer_offset[t];
    }
    return w;
  }

  // Globals and every layer's norms: one buffer (or pointers into the mapping).
  // Globals and norms. Without a mapping both are read into fixed_. With one, the globals are used
  // in place (prefaulted) and the norms are copied into fixed_: faulting a small norm in through the
  // mapping also maps its neighbourhood (fault-around, large page-cache folios), up to ~0.6 MiB of
  // the layer's matrices per layer measured here, which would then stay resident for every layer at
  // once and make RSS grow with the model. Each layer's range is dropped again after the copy.
  Status load_fixed(const ModelLayout& layout) {
    std::vector<std::pair<uint64_t, uint64_t>> globals, owned;
    for (int g = 0; g < kGlobalTensorCount; ++g) {
      const gguf::TensorInfo* ti = layout.globals[g];
      if (ti != nullptr && plan_.global_used[g]) (mapped_ != nullptr ? globals : owned).emplace_back(ti->file_offset, ti->n_bytes);
    }
    tensor_offset_.resize(layout.layers.size());
    norms_.resize(layout.layers.size());
    for (size_t il = 0; il < layout.layers.size(); ++il) {
      for (int t = 0; t < kLayerTensorCount; ++t) {
        if (layout.layers[il][t] == nullptr) {  // optional tensor this file lacks
          tensor_offset_[il][t] = kNotInBuffer;
          continue;
        }
        tensor_offset_[il][t] = layout.layers[il][t]->file_offset;
        if (is_resident_vector(t) && elsewhere(il)) tensor_offset_[il][t] = kNotInBuffer;  // another stage's norm
        else if (is_resident_vector(t))
          owned.emplace_back(layout.layers[il][t]->file_offset, layout.layers[il][t]->n_bytes);
      }
    }
    const std::vector<ReadSpan> spans = plan_spans(owned);
    uint64_t total = 0;
    for (const ReadSpan& s : spans) total = s.buffer_offset + s.length;
    const int64_t t0 = now();
    uint64_t bytes = 0;
    if (total > 0 && !allocate(total, &fixed_))
      return resource_exhausted("cannot allocate " + std::to_string(total) + " bytes for globals and norms");
    const uint64_t file_size = backend_->opened_stat().size;
    for (const ReadSpan& s : spans) {
      const uint64_t end = std::min(s.file_offset + s.length, file_size);
      const io::ReadRequest req{s.file_offset, s.length, fixed_.data() + s.buffer_offset, -1};
      FLEA_ASSIGN_OR_RETURN(uint64_t got, backend_->read(req));
      if (got < end - s.file_offset)
        return data_loss(backend_->describe(req, "file ended after " + std::to_string(got) + " bytes"));
      bytes += got;
    }
    if (mapped_ != nullptr) {
      for (const ReadSpan& s : plan_spans(globals)) {
        const uint64_t end = std::min(s.file_offset + s.length, file_size);
        FLEA_RETURN_IF_ERROR(io::mmap_prefault(backend_.get(), s.file_offset, end - s.file_offset, -1));
        bytes += end - s.file_offset;
      }
      for (size_t il = 0; il < layout.layers.size(); ++il) {
        if (elsewhere(il)) continue;
        uint64_t lo = UINT64_MAX, hi = 0;
        for (const gguf::TensorInfo* ti : layout.layers[il]) {
          if (ti == nullptr) continue;
          lo = std::min(lo, ti->file_offset);
          hi = std::max(hi, ti->file_offset + ti->n_bytes);
        }
        io::mmap_advise_dontneed(backend_.get(), lo, hi - lo);
      }
    }
    if (tel_ != nullptr) tel_->add_io(-1, 0, t0, now(), bytes);
    auto locate = [&](uint64_t off) -> const uint8_t* {
      for (const ReadSpan& s : spans)
        if (off >= s.file_offset && off < s.file_offset + s.length) return fixed_.data() + s.buffer_offset + (off - s.file_offset);
      return nullptr;
    };
    for (int g = 0; g < kGlobalTensorCount; ++g) {
      const gguf::TensorInfo* ti = layout.globals[g];
      globals_[g] = ti == nullptr || !plan_.global_used[g] ? nullptr
                    : mapped_ != nullptr                     ? mapped_ + ti->file_offset
                                                             : locate(ti->file_offset);
    }
    for (size_t il = 0; il < layout.layers.size(); ++il)
      for (int t = 0; t < kLayerTensorCount; ++t)
        norms_[il][t] = is_resident_vector(t) && tensor_offset_[il][t] != kNotInBuffer ? locate(tensor_offset_[il][t]) : nullptr;
    return ok_status();
  }

  bool elsewhere(size_t il) const { return plan_.layers[il].placement == Placement::kElsewhere; }

  // Every host buffer the provider owns goes through here (huge pages per --huge-pages).
  bool allocate(uint64_t bytes, io::AlignedBuffer* buf) {
    if (!io::AlignedBuffer::try_allocate(bytes, buf, io::kIoAlignment, opts_.huge_pages == "on")) return false;
    buf->prefault();  // at start-up, not inside the first token's reads
    buffers_.bytes += bytes;
    if (buf->huge_advised()) buffers_.huge_advised_bytes += bytes;
    return true;
  }

  const Plan plan_;
  const ResidencyOptions opts_;
  ProviderBuffers buffers_;
  std::unique_ptr<io::IoBackend> backend_;
  Telemetry* tel_;
  const uint8_t* mapped_ = nullptr;

  io::AlignedBuffer fixed_;
  std::array<const uint8_t*, kGlobalTensorCount> globals_{};
  std::vector<std::array<const uint8_t*, kLayerTensorCount>> norms_;
  std::vector<std::array<uint64_t, kLayerTensorCount>> tensor_offset_;
  std::vector<io::AlignedBuffer> layer_bufs_;  // resident + cached layers
  std::vector<uint8_t*> base_;                 // per layer: its own buffer (resident/cached) or null
  std::vector<io::AlignedBuffer> slots_;
  std::vector<io::AlignedBuffer> expert_bufs_;

  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<LayerRuntime> rt_;
  std::vector<int> slot_owner_;  // layer in each ring slot, -1 = free
  std::vector<ExpertSlot> xslots_;                  // every layer's expert cache, then the scratch slots
  std::vector<std::vector<int>> expert_where_;      // [layer][expert]: its slot, -1 when not in memory
  std::vector<std::vector<int64_t>> expert_freq_;   // [layer][expert]: times routed to (lfu)
  std::vector<int> expert_first_;                   // [layer]: its first cache slot (-1: not an expert layer)
  uint64_t expert_clock_ = 0;                       // one tick per acquire_experts
  std::deque<Job> queue_;
  int last_acquired_ = 0;
  int64_t acquires_done_ = 0;
  int64_t acquire_limit_ = -1;  // -1 = the run goes on forever (as far as prefetch knows)
  bool stop_ = false;
  std::vector<std::thread> threads_;
};

// The file the header was read from, still: same size, and (when known) same inode and mtime. A
// header read from another file would place every tensor at the wrong bytes.
Status check_same_file(const std::string& path, const gguf::File& file, const io::IoBackend& backend) {
  const io::FileStat& now = backend.opened_stat();
  if (now.size != file.file_size)
    return data_loss("'" + path + "' is " + std::to_string(now.size) + " bytes but its header was read when it had " +
                     std::to_string(file.file_size) + "; it changed since");
  if (file.inode != 0 && now.inode != file.inode)
    return data_loss("'" + path + "' was replaced by another file after its header was read (inode " +
                     std::to_string(file.inode) + " then, " + std::to_string(now.inode) +
                     " now); refusing to stream another file's bytes under this header");
  if (file.inode != 0 && now.mtime_ns != file.mtime_ns)
    return data_loss("'" + path + "' was modified after its header was read (mtime changed); refusing to use its bytes");
  return ok_status();
}

}  // namespace

StatusOr<std::unique_ptr<WeightProvider>> make_provider(const std::string& path, const gguf::File& file,
                                                        const ModelLayout& layout, const Plan& plan,
                                                        const ResidencyOptions& opts, Telemetry* telemetry) {
  if (plan.layers.size() != layout.layers.size())
    return invalid_argument("plan has " + std::to_string(plan.layers.size()) + " layers but the model has " +
                            std::to_string(layout.layers.size()));
  FLEA_ASSIGN_OR_RETURN(std::unique_ptr<io::IoBackend> backend, make_backend(opts));
  FLEA_RETURN_IF_ERROR(backend->open(path));
  FLEA_RETURN_IF_ERROR(check_same_file(path, file, *backend));
  auto p = std::make_unique<StreamingProvider>(plan, opts, std::move(backend), telemetry);
  FLEA_RETURN_IF_ERROR(p->init(layout));
  p->start(-1);
  return std::unique_ptr<WeightProvider>(std::move(p));
}

StatusOr<IoOnlyResult> run_io_only(const std::string& path, const gguf::File& file, const ModelLayout& layout,
                                   const Plan& plan, const ResidencyOptions& opts, int n_tokens,
                                   Telemetry* telemetry) {
  if (n_tokens < 1) return invalid_argument("run_io_only: n_tokens must be >= 1");
  Telemetry local;
  Telemetry* tel = telemetry != nullptr ? telemetry : &local;
  if (plan.layers.size() != layout.layers.size())
    return invalid_argument("plan and model disagree on the number of layers");
  FLEA_ASSIGN_OR_RETURN(std::unique_ptr<io::IoBackend> backend, make_backend(opts));
  FLEA_RETURN_IF_ERROR(backend->open(path));
  FLEA_RETURN_IF_ERROR(check_same_file(path, file, *backend));
  auto provider = std::make_unique<StreamingProvider>(plan, opts, std::move(backend), tel);
  FLEA_RETURN_IF_ERROR(provider->init(layout));
  const uint64_t bytes0 = tel->read_bytes();
  const int64_t t0 = tel->now_ns();
  provider->start(static_cast<int64_t>(n_tokens) * static_cast<int64_t>(layout.layers.size()));
  // Layers that read experts after routing have no router to run here: each token routes to
  // n_expert_used distinct experts drawn uniformly (a fixed seed, so runs repeat).
  std::mt19937_64 rng(0x5eed);
  std::vector<int> experts;
  std::vector<ExpertSlabs> slabs;
  for (int tok = 0; tok < n_tokens; ++tok) {
    for (int il = 0; il < static_cast<int>(layout.layers.size()); ++il) {
      FLEA_ASSIGN_OR_RETURN(LayerWeights w, provider->acquire(il));
      (void)w;
      const LayerPlan& lp = plan.layers[static_cast<size_t>(il)];
      if (lp.experts_streamed) {
        experts.resize(static_cast<size_t>(lp.n_expert));
        std::iota(experts.begin(), experts.end(), 0);
        std::shuffle(experts.begin(), experts.end(), rng);
        experts.resize(static_cast<size_t>(std::min(plan.n_expert_used, lp.n_expert)));
        std::sort(experts.begin(), experts.end());
        const Status st = provider->acquire_experts(il, experts, &slabs);
        if (!st.ok()) {
          provider->release(il);
          return st;
        }
      }
      provider->release(il);
    }
  }
  IoOnlyResult r;
  r.n_tokens = n_tokens;
  r.elapsed_ns = tel->now_ns() - t0;
  r.read_bytes = tel->read_bytes() - bytes0;
  r.read_gb_s = r.elapsed_ns > 0 ? static_cast<double>(r.read_bytes) / static_cast<double>(r.elapsed_ns) : 0;
  r.buffers = provider->buffers();
  return r;
}

bool drop_page_cache(const std::string& path) { return io::drop_page_cache(path); }

std::vector<std::string> provider_warnings(const WeightProvider* p) {
  const auto* s = dynamic_cast<const StreamingProvider*>(p);
  return s != nullptr ? s->warnings() : std::vector<std::string>{};
}

ProviderBuffers provider_buffers(const WeightProvider* p) {
  const auto* s = dynamic_cast<const StreamingProvider*>(p);
  return s != nullptr ? s->buffers() : ProviderBuffers{};
}

}  // namespace flea
