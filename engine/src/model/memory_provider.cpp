#include "model/memory_provider.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

namespace flea {

StatusOr<std::unique_ptr<MemoryProvider>> MemoryProvider::load(const Model& model) {
  const std::string& path = model.file.path;
  const uint64_t size = model.file.file_size;
  std::unique_ptr<MemoryProvider> p(new MemoryProvider(model));
  void* mem = std::aligned_alloc(64, (size + 63) / 64 * 64);
  if (!mem) return resource_exhausted(path + ": cannot allocate " + std::to_string(size) + " bytes");
  p->bytes_ = std::unique_ptr<uint8_t, void (*)(void*)>(static_cast<uint8_t*>(mem), std::free);
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return not_found(path + ": cannot open: " + std::strerror(errno));
  uint64_t done = 0;
  while (done < size) {
    const ssize_t r = ::pread(fd, p->bytes_.get() + done, size - done, static_cast<off_t>(done));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) {
      const std::string why = r < 0 ? std::strerror(errno) : "unexpected end of file";
      ::close(fd);
      return io_error(path + ": read at offset " + std::to_string(done) + ": " + why);
    }
    done += static_cast<uint64_t>(r);
  }
  ::close(fd);
  return p;
}

const uint8_t* MemoryProvider::global(GlobalTensor t) {
  const gguf::TensorInfo* info = model_.layout.globals[static_cast<int>(t)];
  return info ? bytes_.get() + info->file_offset : nullptr;
}

StatusOr<LayerWeights> MemoryProvider::acquire(int il) {
  LayerWeights w;
  for (int k = 0; k < kLayerTensorCount; ++k) {
    const gguf::TensorInfo* t = model_.layout.layers[static_cast<size_t>(il)][k];
    w.data[k] = t ? bytes_.get() + t->file_offset : nullptr;
  }
  return w;
}

}  // namespace flea
