#include "gguf/gguf.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cinttypes>
#include <cstring>
#include <limits>
#include <memory>
#include <sstream>

namespace flea::gguf {
namespace {

constexpr uint64_t kMaxKeyBytes = 65535;
// Smallest possible encodings, used to reject counts that cannot fit in the file before looping.
constexpr uint64_t kMinKvBytes = 8 + 1 + 4 + 1;                  // key len, 1-byte key, type, u8
constexpr uint64_t kMinTensorInfoBytes = 8 + 1 + 4 + 8 + 4 + 8;  // name len, name, n_dims, ne0, type, offset

// Random access to the bytes of a file or a memory buffer.
class Source {
 public:
  virtual ~Source() = default;
  virtual uint64_t size() const = 0;
  // Copies [offset, offset + n) into dst; the caller has checked the range against size().
  virtual Status read_at(uint64_t offset, void* dst, size_t n) = 0;
};

class MemorySource : public Source {
 public:
  MemorySource(const uint8_t* data, size_t size) : data_(data), size_(size) {}
  uint64_t size() const override { return size_; }
  Status read_at(uint64_t offset, void* dst, size_t n) override {
    std::memcpy(dst, data_ + offset, n);
    return ok_status();
  }

 private:
  const uint8_t* data_;
  size_t size_;
};

// Reads the header through a 1 MiB window so that parsing many small fields costs few syscalls.
class FileSource : public Source {
 public:
  FileSource(int fd, uint64_t size, std::string path) : fd_(fd), size_(size), path_(std::move(path)) {}
  ~FileSource() override { ::close(fd_); }
  uint64_t size() const override { return size_; }
  Status read_at(uint64_t offset, void* dst, size_t n) override {
    auto* out = static_cast<uint8_t*>(dst);
    while (n > 0) {
      if (offset < window_start_ || offset >= window_start_ + window_.size()) {
        FLEA_RETURN_IF_ERROR(fill(offset));
      }
      const size_t in_window = static_cast<size_t>(window_start_ + window_.size() - offset);
      const size_t take = std::min(n, in_window);
      std::memcpy(out, window_.data() + (offset - window_start_), take);
      out += take;
      offset += take;
      n -= take;
    }
    return ok_status();
  }

 private:
  Status fill(uint64_t offset) {
    const size_t want = static_cast<size_t>(std::min<uint64_t>(kWindowBytes, size_ - offset));
    window_.resize(want);
    size_t got = 0;
    while (got < want) {
      ssize_t r = ::pread(fd_, window_.data() + got, want - got, static_cast<off_t>(offset + got));
      if (r < 0 && errno == EINTR) continue;
      if (r < 0) return io_error(path_ + ": read at offset " + std::to_string(offset + got) + ": " + std::strerror(errno));
      if (r == 0) return data_loss(path_ + ": file shrank while reading its header at offset " + std::to_string(offset + got));
      got += static_cast<size_t>(r);
    }
    window_start_ = offset;
    return ok_status();
  }

  static constexpr size_t kWindowBytes = 1 << 20;
  int fd_;
  uint64_t size_;
  std::string path_;
  uint64_t window_start_ = 0;
  std::vector<uint8_t> window_;
};

// Bounds-checked little-endian cursor. Every error names the field, the value, what was allowed and
// the byte offset where the field starts.
class Cursor {
 public:
  Cursor(Source* src, std::string path) : src_(src), path_(std::move(path)) {}

  uint64_t pos() const { return pos_; }
  uint64_t remaining() const { return src_->size() - pos_; }

  Status error(const std::string& field, const std::string& value, const std::string& allowed,
               uint64_t offset) const {
    std::ostringstream os;
    os << path_ << ": invalid GGUF: field '" << field << "' = " << value;
    if (!allowed.empty()) os << " (expected " << allowed << ")";
    os << " at byte offset " << offset;
    return data_loss(os.str());
  }

  Status raw(const std::string& field, void* dst, size_t n) {
    if (n > remaining()) {
      return error(field, "<" + std::to_string(n) + " bytes>",
                   "at most " + std::to_string(remaining()) + " bytes left in the file", pos_);
    }
    FLEA_RETURN_IF_ERROR(src_->read_at(pos_, dst, n));
    pos_ += n;
    return ok_status();
  }

  template <typename T>
  Status read(const std::string& field, T* out) {
    return raw(field, out, sizeof(T));  // GGUF is little-endian, as is every host we build for
  }

  Status string(const std::string& field, uint64_t cap, std::string* out) {
    const uint64_t at = pos_;
    uint64_t len = 0;
    FLEA_RETURN_IF_ERROR(read(field + ".length", &len));
    if (len > cap) {
      return error(field + ".length", std::to_string(len), "at most " + std::to_string(cap), at);
    }
    if (len > remaining()) {
      return error(field + ".length", std::to_string(len),
                   "at most the " + std::to_string(remaining()) + " bytes left in the file", at);
    }
    out->resize(static_cast<size_t>(len));
    return raw(field, out->data(), static_cast<size_t>(len));
  }

 private:
  Source* src_;
  std::string path_;
  uint64_t pos_ = 0;
};

bool known_value_type(uint32_t t) { return t <= static_cast<uint32_t>(ValueType::FLOAT64); }

Status read_scalar(Cursor& c, const std::string& field, ValueType type, Value* v) {
  switch (type) {
    case ValueType::UINT8: { uint8_t x; FLEA_RETURN_IF_ERROR(c.read(field, &x)); v->u = x; v->i = x; break; }
    case ValueType::INT8: { int8_t x; FLEA_RETURN_IF_ERROR(c.read(field, &x)); v->i = x; break; }
    case ValueType::UINT16: { uint16_t x; FLEA_RETURN_IF_ERROR(c.read(field, &x)); v->u = x; v->i = x; break; }
    case ValueType::INT16: { int16_t x; FLEA_RETURN_IF_ERROR(c.read(field, &x)); v->i = x; break; }
    case ValueType::UINT32: { uint32_t x; FLEA_RETURN_IF_ERROR(c.read(field, &x)); v->u = x; v->i = x; break; }
    case ValueType::INT32: { int32_t x; FLEA_RETURN_IF_ERROR(c.read(field, &x)); v->i = x; break; }
    case ValueType::UINT64: { uint64_t x; FLEA_RETURN_IF_ERROR(c.read(field, &x)); v->u = x; v->i = static_cast<int64_t>(x); break; }
    case ValueType::INT64: { int64_t x; FLEA_RETURN_IF_ERROR(c.read(field, &x)); v->i = x; break; }
    case ValueType::FLOAT32: { float x; FLEA_RETURN_IF_ERROR(c.read(field, &x)); v->f = x; break; }
    case ValueType::FLOAT64: { double x; FLEA_RETURN_IF_ERROR(c.read(field, &x)); v->f = x; break; }
    case ValueType::BOOL: {
      const uint64_t at = c.pos();
      uint8_t x;
      FLEA_RETURN_IF_ERROR(c.read(field, &x));
      if (x > 1) return c.error(field, std::to_string(x), "0 or 1 for a bool", at);
      v->i = x;
      v->u = x;
      break;
    }
    case ValueType::STRING: return c.string(field, kMaxStringBytes, &v->s);
    case ValueType::ARRAY: return internal_error("read_scalar called on an array");
  }
  return ok_status();
}

Status read_array(Cursor& c, const std::string& field, Value* v) {
  uint64_t at = c.pos();
  uint32_t elem = 0;
  FLEA_RETURN_IF_ERROR(c.read(field + ".array_type", &elem));
  if (!known_value_type(elem)) {
    return c.error(field + ".array_type", std::to_string(elem), "a GGUF value type 0..12", at);
  }
  if (elem == static_cast<uint32_t>(ValueType::ARRAY)) {
    return c.error(field + ".array_type", "9 (ARRAY)", "a scalar or string type: nested arrays are not supported", at);
  }
  v->array_type = static_cast<ValueType>(elem);
  at = c.pos();
  uint64_t count = 0;
  FLEA_RETURN_IF_ERROR(c.read(field + ".count", &count));
  const uint64_t min_elem_bytes =
      v->array_type == ValueType::STRING ? 8 : value_type_size(v->array_type);
  if (count > c.remaining() / min_elem_bytes) {
    return c.error(field + ".count", std::to_string(count),
                   "count × " + std::to_string(min_elem_bytes) + " bytes to fit in the " +
                       std::to_string(c.remaining()) + " bytes left in the file",
                   at);
  }
  Value tmp;
  if (v->array_type == ValueType::STRING) {
    v->arr_str.reserve(static_cast<size_t>(count));
  } else if (v->array_type == ValueType::FLOAT32 || v->array_type == ValueType::FLOAT64) {
    v->arr_float.reserve(static_cast<size_t>(count));
  } else {
    v->arr_int.reserve(static_cast<size_t>(count));
  }
  for (uint64_t k = 0; k < count; ++k) {
    const std::string efield = field + "[" + std::to_string(k) + "]";
    FLEA_RETURN_IF_ERROR(read_scalar(c, efield, v->array_type, &tmp));
    switch (v->array_type) {
      case ValueType::STRING: v->arr_str.push_back(std::move(tmp.s)); break;
      case ValueType::FLOAT32:
      case ValueType::FLOAT64: v->arr_float.push_back(tmp.f); break;
      case ValueType::UINT64: v->arr_int.push_back(static_cast<int64_t>(tmp.u)); break;
      default: v->arr_int.push_back(tmp.i); break;
    }
  }
  return ok_status();
}

bool mul_overflows(uint64_t a, uint64_t b, uint64_t* out) {
  if (a != 0 && b > std::numeric_limits<uint64_t>::max() / a) return true;
  *out = a * b;
  return false;
}

Status parse(Source* src, const std::string& path, File* f) {
  Cursor c(src, path);
  f->path = path;
  f->file_size = src->size();

  uint32_t magic = 0;
  if (src->size() < 4) {
    return c.error("magic", "<" + std::to_string(src->size()) + "-byte file>", "\"GGUF\"", 0);
  }
  FLEA_RETURN_IF_ERROR(c.read("magic", &magic));
  if (magic != kMagic) {
    char text[5] = {0};
    std::memcpy(text, &magic, 4);
    for (char& ch : text) if (ch && (ch < 32 || ch > 126)) ch = '?';
    return c.error("magic", std::string("\"") + text + "\"", "\"GGUF\"", 0);
  }
  FLEA_RETURN_IF_ERROR(c.read("version", &f->version));
  if (f->version != 2 && f->version != 3) {
    const uint32_t swapped = __builtin_bswap32(f->version);
    const std::string why = (swapped == 2 || swapped == 3)
                                ? "2 or 3 (this is a byte-swapped big-endian file)"
                                : "2 or 3";
    return c.error("version", std::to_string(f->version), why, 4);
  }
  uint64_t n_tensors = 0, n_kv = 0;
  FLEA_RETURN_IF_ERROR(c.read("tensor_count", &n_tensors));
  FLEA_RETURN_IF_ERROR(c.read("metadata_kv_count", &n_kv));
  {
    uint64_t need_t = 0, need_kv = 0;
    if (mul_overflows(n_tensors, kMinTensorInfoBytes, &need_t) || need_t > c.remaining()) {
      return c.error("tensor_count", std::to_string(n_tensors),
                     "at most " + std::to_string(c.remaining() / kMinTensorInfoBytes) +
                         " tensor infos in a file of " + std::to_string(f->file_size) + " bytes",
                     8);
    }
    if (mul_overflows(n_kv, kMinKvBytes, &need_kv) || need_kv > c.remaining() - need_t) {
      return c.error("metadata_kv_count", std::to_string(n_kv),
                     "at most " + std::to_string((c.remaining() - need_t) / kMinKvBytes) +
                         " key/value pairs in a file of " + std::to_string(f->file_size) + " bytes",
                     16);
    }
  }

  f->kv.reserve(static_cast<size_t>(n_kv));
  for (uint64_t k = 0; k < n_kv; ++k) {
    KeyValue kv;
    kv.file_offset = c.pos();
    const std::string field = "kv[" + std::to_string(k) + "]";
    FLEA_RETURN_IF_ERROR(c.string(field + ".key", kMaxKeyBytes, &kv.key));
    if (kv.key.empty()) return c.error(field + ".key", "\"\"", "a non-empty key", kv.file_offset);
    if (f->kv_index.count(kv.key)) {
      return c.error(field + ".key", "\"" + kv.key + "\"", "a key not already defined", kv.file_offset);
    }
    const std::string vfield = kv.key;
    const uint64_t type_at = c.pos();
    uint32_t type = 0;
    FLEA_RETURN_IF_ERROR(c.read(vfield + ".type", &type));
    if (!known_value_type(type)) {
      return c.error(vfield + ".type", std::to_string(type), "a GGUF value type 0..12", type_at);
    }
    kv.value.type = static_cast<ValueType>(type);
    if (kv.value.type == ValueType::ARRAY) {
      FLEA_RETURN_IF_ERROR(read_array(c, vfield, &kv.value));
    } else {
      FLEA_RETURN_IF_ERROR(read_scalar(c, vfield, kv.value.type, &kv.value));
    }
    if (kv.key == "general.alignment") {
      if (kv.value.type != ValueType::UINT32) {
        return c.error("general.alignment.type", value_type_name(kv.value.type), "UINT32", type_at);
      }
      const uint64_t a = kv.value.u;
      if (a == 0 || (a & (a - 1)) != 0) {
        return c.error("general.alignment", std::to_string(a), "a power of two", type_at + 4);
      }
      f->alignment = a;
    }
    f->kv_index[kv.key] = f->kv.size();
    f->kv.push_back(std::move(kv));
  }

  f->tensors.reserve(static_cast<size_t>(n_tensors));
  for (uint64_t k = 0; k < n_tensors; ++k) {
    TensorInfo t;
    const uint64_t at = c.pos();
    std::string field = "tensor[" + std::to_string(k) + "]";
    FLEA_RETURN_IF_ERROR(c.string(field + ".name", kMaxTensorNameBytes - 1, &t.name));
    if (t.name.empty()) return c.error(field + ".name", "\"\"", "a non-empty tensor name", at);
    if (f->tensor_index.count(t.name)) {
      return c.error(field + ".name", "\"" + t.name + "\"", "a name not already used", at);
    }
    field = "tensor '" + t.name + "'";
    uint64_t dims_at = c.pos();
    FLEA_RETURN_IF_ERROR(c.read(field + ".n_dims", &t.n_dims));
    if (t.n_dims < 1 || t.n_dims > kMaxDims) {
      return c.error(field + ".n_dims", std::to_string(t.n_dims), "1..4", dims_at);
    }
    uint64_t n_elements = 1;
    for (uint32_t d = 0; d < t.n_dims; ++d) {
      const uint64_t ne_at = c.pos();
      int64_t ne = 0;
      const std::string nfield = field + ".ne[" + std::to_string(d) + "]";
      FLEA_RETURN_IF_ERROR(c.read(nfield, &ne));
      if (ne <= 0) return c.error(nfield, std::to_string(ne), "a dimension > 0", ne_at);
      if (mul_overflows(n_elements, static_cast<uint64_t>(ne), &n_elements) ||
          n_elements > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
        return c.error(nfield, std::to_string(ne), "an element count that fits in int64", ne_at);
      }
      t.ne[d] = ne;
    }
    const uint64_t type_at = c.pos();
    uint32_t type_id = 0;
    FLEA_RETURN_IF_ERROR(c.read(field + ".type", &type_id));
    const TypeInfo* ti = type_info(type_id);
    if (!ti) return c.error(field + ".type", std::to_string(type_id), "a known ggml type id", type_at);
    t.type = ti->type;
    if (t.ne[0] % ti->block_size != 0) {
      return c.error(field + ".ne[0]", std::to_string(t.ne[0]),
                     "a multiple of " + std::to_string(ti->block_size) + " (the " + ti->name +
                         " block size)",
                     dims_at + 4);
    }
    const uint64_t blocks = n_elements / static_cast<uint64_t>(ti->block_size);
    if (mul_overflows(blocks, ti->block_bytes, &t.n_bytes)) {
      return c.error(field + ".ne", std::to_string(n_elements) + " elements",
                     "a byte size that fits in 64 bits", dims_at);
    }
    const uint64_t off_at = c.pos();
    FLEA_RETURN_IF_ERROR(c.read(field + ".offset", &t.offset));
    if (t.offset % f->alignment != 0) {
      return c.error(field + ".offset", std::to_string(t.offset),
                     "a multiple of the alignment " + std::to_string(f->alignment), off_at);
    }
    f->tensor_index[t.name] = f->tensors.size();
    f->tensors.push_back(std::move(t));
  }

  const uint64_t header_end = c.pos();
  f->data_offset = (header_end + f->alignment - 1) / f->alignment * f->alignment;
  if (n_tensors > 0 && f->data_offset > f->file_size) {
    return c.error("data section", "offset " + std::to_string(f->data_offset),
                   "within the file of " + std::to_string(f->file_size) + " bytes", header_end);
  }
  // Every tensor's bytes must lie inside the file and no two may overlap.
  std::vector<size_t> order(f->tensors.size());
  for (size_t k = 0; k < order.size(); ++k) order[k] = k;
  std::sort(order.begin(), order.end(),
            [&](size_t a, size_t b) { return f->tensors[a].offset < f->tensors[b].offset; });
  const uint64_t data_bytes = f->file_size - std::min(f->file_size, f->data_offset);
  const TensorInfo* prev = nullptr;
  for (size_t k : order) {
    TensorInfo& t = f->tensors[k];
    if (t.offset > data_bytes || t.n_bytes > data_bytes - t.offset) {
      return c.error("tensor '" + t.name + "'.offset", std::to_string(t.offset),
                     "offset + " + std::to_string(t.n_bytes) + " data bytes within the " +
                         std::to_string(data_bytes) + "-byte data section",
                     f->data_offset);
    }
    if (prev && t.offset < prev->offset + prev->n_bytes) {
      return c.error("tensor '" + t.name + "'.offset", std::to_string(t.offset),
                     "at least " + std::to_string(prev->offset + prev->n_bytes) +
                         " (not overlapping tensor '" + prev->name + "')",
                     f->data_offset);
    }
    t.file_offset = f->data_offset + t.offset;
    prev = &t;
  }
  return ok_status();
}

}  // namespace

const char* value_type_name(ValueType t) {
  switch (t) {
    case ValueType::UINT8: return "UINT8";
    case ValueType::INT8: return "INT8";
    case ValueType::UINT16: return "UINT16";
    case ValueType::INT16: return "INT16";
    case ValueType::UINT32: return "UINT32";
    case ValueType::INT32: return "INT32";
    case ValueType::FLOAT32: return "FLOAT32";
    case ValueType::BOOL: return "BOOL";
    case ValueType::STRING: return "STRING";
    case ValueType::ARRAY: return "ARRAY";
    case ValueType::UINT64: return "UINT64";
    case ValueType::INT64: return "INT64";
    case ValueType::FLOAT64: return "FLOAT64";
  }
  return "UNKNOWN";
}

size_t value_type_size(ValueType t) {
  switch (t) {
    case ValueType::UINT8: case ValueType::INT8: case ValueType::BOOL: return 1;
    case ValueType::UINT16: case ValueType::INT16: return 2;
    case ValueType::UINT32: case ValueType::INT32: case ValueType::FLOAT32: return 4;
    case ValueType::UINT64: case ValueType::INT64: case ValueType::FLOAT64: return 8;
    default: return 0;
  }
}

uint64_t Value::array_size() const {
  if (type != ValueType::ARRAY) return 0;
  if (array_type == ValueType::STRING) return arr_str.size();
  if (array_type == ValueType::FLOAT32 || array_type == ValueType::FLOAT64) return arr_float.size();
  return arr_int.size();
}

bool Value::is_integer() const {
  switch (type) {
    case ValueType::UINT8: case ValueType::INT8: case ValueType::UINT16: case ValueType::INT16:
    case ValueType::UINT32: case ValueType::INT32: case ValueType::UINT64: case ValueType::INT64:
      return true;
    default: return false;
  }
}

bool Value::as_int(int64_t* out) const {
  if (!is_integer()) return false;
  if (type == ValueType::UINT64 && u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return false;
  *out = i;
  return true;
}

bool Value::as_float(double* out) const {
  if (type == ValueType::FLOAT32 || type == ValueType::FLOAT64) { *out = f; return true; }
  int64_t v;
  if (as_int(&v)) { *out = static_cast<double>(v); return true; }
  return false;
}

std::string Value::to_display_string(size_t max_elems) const {
  std::ostringstream os;
  switch (type) {
    case ValueType::STRING: {
      std::string s2 = s.size() > 60 ? s.substr(0, 60) + "..." : s;
      os << '"' << s2 << '"';
      break;
    }
    case ValueType::FLOAT32: case ValueType::FLOAT64: os << f; break;
    case ValueType::BOOL: os << (i ? "true" : "false"); break;
    case ValueType::UINT64: os << u; break;
    case ValueType::ARRAY: {
      const uint64_t n = array_size();
      os << value_type_name(array_type) << "[" << n << "] [";
      for (uint64_t k = 0; k < std::min<uint64_t>(n, max_elems); ++k) {
        if (k) os << ", ";
        if (array_type == ValueType::STRING) os << '"' << arr_str[k] << '"';
        else if (array_type == ValueType::FLOAT32 || array_type == ValueType::FLOAT64) os << arr_float[k];
        else os << arr_int[k];
      }
      if (n > max_elems) os << ", ...";
      os << "]";
      break;
    }
    default: os << i; break;
  }
  return os.str();
}

const Value* File::find(const std::string& key) const {
  auto it = kv_index.find(key);
  return it == kv_index.end() ? nullptr : &kv[it->second].value;
}

const TensorInfo* File::find_tensor(const std::string& name) const {
  auto it = tensor_index.find(name);
  return it == tensor_index.end() ? nullptr : &tensors[it->second];
}

StatusOr<int64_t> File::get_int(const std::string& key) const {
  const Value* v = find(key);
  if (!v) return not_found(path + ": missing metadata key '" + key + "'");
  int64_t out;
  if (!v->as_int(&out)) {
    return invalid_argument(path + ": metadata key '" + key + "' has type " +
                            value_type_name(v->type) + " (expected an integer)");
  }
  return out;
}

StatusOr<double> File::get_float(const std::string& key) const {
  const Value* v = find(key);
  if (!v) return not_found(path + ": missing metadata key '" + key + "'");
  double out;
  if (!v->as_float(&out)) {
    return invalid_argument(path + ": metadata key '" + key + "' has type " +
                            value_type_name(v->type) + " (expected a number)");
  }
  return out;
}

StatusOr<std::string> File::get_string(const std::string& key) const {
  const Value* v = find(key);
  if (!v) return not_found(path + ": missing metadata key '" + key + "'");
  if (v->type != ValueType::STRING) {
    return invalid_argument(path + ": metadata key '" + key + "' has type " +
                            value_type_name(v->type) + " (expected STRING)");
  }
  return v->s;
}

StatusOr<File> read_file(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return not_found(path + ": cannot open: " + std::strerror(errno));
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    return io_error(path + ": cannot stat: " + std::strerror(err));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    return invalid_argument(path + ": not a regular file");
  }
  FileSource src(fd, static_cast<uint64_t>(st.st_size), path);
  File f;
  FLEA_RETURN_IF_ERROR(parse(&src, path, &f));
  f.inode = static_cast<uint64_t>(st.st_ino);
  f.mtime_ns = static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000LL + st.st_mtim.tv_nsec;
  return f;
}

StatusOr<File> read_memory(const uint8_t* data, size_t size, const std::string& path) {
  MemorySource src(data, size);
  File f;
  FLEA_RETURN_IF_ERROR(parse(&src, path, &f));
  return f;
}

}  // namespace flea::gguf
