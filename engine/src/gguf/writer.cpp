#include "gguf/writer.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>

namespace flea::gguf {
namespace {

constexpr uint32_t kWriteVersion = 3;

uint64_t align_up(uint64_t n, uint64_t a) { return (n + a - 1) / a * a; }

std::string errno_text(int err) { return std::string(std::strerror(err)); }

bool is_int_type(ValueType t) {
  switch (t) {
    case ValueType::UINT8: case ValueType::INT8: case ValueType::UINT16: case ValueType::INT16:
    case ValueType::UINT32: case ValueType::INT32: case ValueType::UINT64: case ValueType::INT64:
    case ValueType::BOOL:
      return true;
    default:
      return false;
  }
}

bool is_float_type(ValueType t) { return t == ValueType::FLOAT32 || t == ValueType::FLOAT64; }

// Little-endian serialization into a byte vector (x86-64 and aarch64 hosts are little-endian).
class Out {
 public:
  explicit Out(std::vector<uint8_t>* b) : b_(b) {}
  template <typename T>
  void pod(T v) {
    const auto* p = reinterpret_cast<const uint8_t*>(&v);
    b_->insert(b_->end(), p, p + sizeof(T));
  }
  void str(const std::string& s) {
    pod<uint64_t>(s.size());
    b_->insert(b_->end(), s.begin(), s.end());
  }

 private:
  std::vector<uint8_t>* b_;
};

// Writes one scalar of type `t` whose value is held as integer bits / double.
void put_scalar(Out& o, ValueType t, int64_t iv, uint64_t uv, double fv) {
  switch (t) {
    case ValueType::UINT8: o.pod<uint8_t>(static_cast<uint8_t>(uv)); break;
    case ValueType::INT8: o.pod<int8_t>(static_cast<int8_t>(iv)); break;
    case ValueType::UINT16: o.pod<uint16_t>(static_cast<uint16_t>(uv)); break;
    case ValueType::INT16: o.pod<int16_t>(static_cast<int16_t>(iv)); break;
    case ValueType::UINT32: o.pod<uint32_t>(static_cast<uint32_t>(uv)); break;
    case ValueType::INT32: o.pod<int32_t>(static_cast<int32_t>(iv)); break;
    case ValueType::UINT64: o.pod<uint64_t>(uv); break;
    case ValueType::INT64: o.pod<int64_t>(iv); break;
    case ValueType::FLOAT32: o.pod<float>(static_cast<float>(fv)); break;
    case ValueType::FLOAT64: o.pod<double>(fv); break;
    case ValueType::BOOL: o.pod<uint8_t>(iv != 0 ? 1 : 0); break;
    default: FLEA_CHECK(false, "not a scalar type");
  }
}

void put_value(Out& o, const Value& v) {
  if (v.type == ValueType::STRING) {
    o.str(v.s);
  } else if (v.type == ValueType::ARRAY) {
    o.pod<uint32_t>(static_cast<uint32_t>(v.array_type));
    o.pod<uint64_t>(v.array_size());
    if (v.array_type == ValueType::STRING) {
      for (const auto& s : v.arr_str) o.str(s);
    } else if (is_float_type(v.array_type)) {
      for (double f : v.arr_float) put_scalar(o, v.array_type, 0, 0, f);
    } else {
      for (int64_t x : v.arr_int) put_scalar(o, v.array_type, x, static_cast<uint64_t>(x), 0);
    }
  } else {
    put_scalar(o, v.type, v.i, v.u, v.f);
  }
}

uint64_t value_bytes(const Value& v) {
  if (v.type == ValueType::STRING) return 8 + v.s.size();
  if (v.type == ValueType::ARRAY) {
    uint64_t n = 4 + 8;
    if (v.array_type == ValueType::STRING) {
      for (const auto& s : v.arr_str) n += 8 + s.size();
    } else {
      n += v.array_size() * value_type_size(v.array_type);
    }
    return n;
  }
  return value_type_size(v.type);
}

Value scalar(ValueType t) {
  Value v;
  v.type = t;
  return v;
}

}  // namespace

Value value_u8(uint8_t x) { Value v = scalar(ValueType::UINT8); v.u = x; v.i = x; return v; }
Value value_i8(int8_t x) { Value v = scalar(ValueType::INT8); v.i = x; return v; }
Value value_u16(uint16_t x) { Value v = scalar(ValueType::UINT16); v.u = x; v.i = x; return v; }
Value value_i16(int16_t x) { Value v = scalar(ValueType::INT16); v.i = x; return v; }
Value value_u32(uint32_t x) { Value v = scalar(ValueType::UINT32); v.u = x; v.i = x; return v; }
Value value_i32(int32_t x) { Value v = scalar(ValueType::INT32); v.i = x; return v; }
Value value_u64(uint64_t x) {
  Value v = scalar(ValueType::UINT64);
  v.u = x;
  v.i = static_cast<int64_t>(x);
  return v;
}
Value value_i64(int64_t x) { Value v = scalar(ValueType::INT64); v.i = x; return v; }
Value value_f32(float x) { Value v = scalar(ValueType::FLOAT32); v.f = x; return v; }
Value value_f64(double x) { Value v = scalar(ValueType::FLOAT64); v.f = x; return v; }
Value value_bool(bool x) { Value v = scalar(ValueType::BOOL); v.i = v.u = x ? 1 : 0; return v; }
Value value_string(std::string x) { Value v = scalar(ValueType::STRING); v.s = std::move(x); return v; }

Value value_array_string(std::vector<std::string> x) {
  Value v = scalar(ValueType::ARRAY);
  v.array_type = ValueType::STRING;
  v.arr_str = std::move(x);
  return v;
}

Value value_array_f32(const std::vector<float>& x) {
  Value v = scalar(ValueType::ARRAY);
  v.array_type = ValueType::FLOAT32;
  v.arr_float.assign(x.begin(), x.end());
  return v;
}

Value value_array_f64(std::vector<double> x) {
  Value v = scalar(ValueType::ARRAY);
  v.array_type = ValueType::FLOAT64;
  v.arr_float = std::move(x);
  return v;
}

Value value_array_int(ValueType elem, std::vector<int64_t> x) {
  FLEA_CHECK(is_int_type(elem), "value_array_int needs an integer or bool element type");
  Value v = scalar(ValueType::ARRAY);
  v.array_type = elem;
  v.arr_int = std::move(x);
  return v;
}

Writer::~Writer() { abandon(); }

void Writer::abandon() {
  if (fd_ >= 0) {
    ::close(fd_);
    fd_ = -1;
  }
  if (!finished_ && !tmp_path_.empty()) {
    ::unlink(tmp_path_.c_str());
    tmp_path_.clear();
  }
}

Status Writer::add_kv(const std::string& key, Value value) {
  if (fd_ >= 0) return invalid_argument("gguf writer: add_kv('" + key + "') after open()");
  if (key.empty()) return invalid_argument("gguf writer: empty metadata key");
  for (const auto& kv : kv_) {
    if (kv.key == key) return invalid_argument("gguf writer: duplicate metadata key '" + key + "'");
  }
  if (value.type == ValueType::ARRAY) {
    if (value.array_type == ValueType::ARRAY) {
      return invalid_argument("gguf writer: key '" + key + "': nested arrays are not supported");
    }
    if (value.array_type != ValueType::STRING && value_type_size(value.array_type) == 0) {
      return invalid_argument("gguf writer: key '" + key + "': unknown array element type");
    }
  } else if (value.type != ValueType::STRING && value_type_size(value.type) == 0) {
    return invalid_argument("gguf writer: key '" + key + "': unknown value type");
  }
  if (key == "general.alignment") {
    if (value.type != ValueType::UINT32 || value.u == 0 || (value.u & (value.u - 1)) != 0) {
      return invalid_argument("gguf writer: general.alignment must be a UINT32 power of two, got " +
                              value.to_display_string());
    }
    alignment_ = value.u;
  }
  kv_.push_back({key, std::move(value), 0});
  return ok_status();
}

Status Writer::add_tensor(const TensorDecl& decl) {
  if (fd_ >= 0) return invalid_argument("gguf writer: add_tensor('" + decl.name + "') after open()");
  if (decl.name.empty() || decl.name.size() >= kMaxTensorNameBytes) {
    return invalid_argument("gguf writer: tensor name '" + decl.name + "' must be 1.." +
                            std::to_string(kMaxTensorNameBytes - 1) + " bytes");
  }
  for (const auto& d : decls_) {
    if (d.name == decl.name) return invalid_argument("gguf writer: duplicate tensor '" + decl.name + "'");
  }
  if (decl.ne.empty() || decl.ne.size() > kMaxDims) {
    return invalid_argument("gguf writer: tensor '" + decl.name + "' has " +
                            std::to_string(decl.ne.size()) + " dims, allowed 1..4");
  }
  const TypeInfo* ti = type_info(static_cast<uint32_t>(decl.type));
  if (ti == nullptr) return invalid_argument("gguf writer: tensor '" + decl.name + "' has an unknown type");
  uint64_t n_elem = 1;
  for (int64_t d : decl.ne) {
    if (d <= 0) {
      return invalid_argument("gguf writer: tensor '" + decl.name + "' has dimension " +
                              std::to_string(d) + ", must be > 0");
    }
    n_elem *= static_cast<uint64_t>(d);
  }
  if (decl.ne[0] % ti->block_size != 0) {
    return invalid_argument("gguf writer: tensor '" + decl.name + "': ne[0] = " +
                            std::to_string(decl.ne[0]) + " is not a multiple of " + ti->name +
                            "'s block size " + std::to_string(ti->block_size));
  }
  const uint64_t n_bytes = n_elem / static_cast<uint64_t>(ti->block_size) * ti->block_bytes;
  decls_.push_back(decl);
  tensor_bytes_.push_back(n_bytes);
  return ok_status();
}

uint64_t Writer::header_bytes() const {
  uint64_t n = 4 + 4 + 8 + 8;
  for (const auto& kv : kv_) n += 8 + kv.key.size() + 4 + value_bytes(kv.value);
  for (const auto& d : decls_) n += 8 + d.name.size() + 4 + 8 * d.ne.size() + 4 + 8;
  return n;
}

uint64_t Writer::data_offset() const { return align_up(header_bytes(), alignment_); }

uint64_t Writer::file_bytes() const {
  uint64_t n = data_offset();
  for (uint64_t b : tensor_bytes_) n += align_up(b, alignment_);
  return n;
}

std::vector<TensorInfo> Writer::tensor_infos() const {
  std::vector<TensorInfo> out;
  const uint64_t base = data_offset();
  uint64_t off = 0;
  for (size_t i = 0; i < decls_.size(); ++i) {
    TensorInfo t;
    t.name = decls_[i].name;
    t.type = decls_[i].type;
    t.n_dims = static_cast<uint32_t>(decls_[i].ne.size());
    for (size_t d = 0; d < decls_[i].ne.size(); ++d) t.ne[d] = decls_[i].ne[d];
    t.offset = off;
    t.file_offset = base + off;
    t.n_bytes = tensor_bytes_[i];
    out.push_back(t);
    off += align_up(tensor_bytes_[i], alignment_);
  }
  return out;
}

Status Writer::open(const std::string& path, size_t buffer_bytes) {
  if (fd_ >= 0 || finished_) return invalid_argument("gguf writer: open() called twice");
  path_ = path;
  tmp_path_ = path + ".tmp-" + std::to_string(::getpid());
  fd_ = ::open(tmp_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd_ < 0) {
    const int err = errno;
    tmp_path_.clear();
    return io_error("cannot create " + path + ".tmp-" + std::to_string(::getpid()) + ": " + errno_text(err));
  }
  buf_.assign(std::max<size_t>(buffer_bytes, 4096), 0);
  buf_used_ = 0;
  file_pos_ = 0;

  std::vector<uint8_t> header;
  header.reserve(header_bytes());
  Out o(&header);
  o.pod<uint32_t>(kMagic);
  o.pod<uint32_t>(kWriteVersion);
  o.pod<uint64_t>(decls_.size());
  o.pod<uint64_t>(kv_.size());
  for (const auto& kv : kv_) {
    o.str(kv.key);
    o.pod<uint32_t>(static_cast<uint32_t>(kv.value.type));
    put_value(o, kv.value);
  }
  const std::vector<TensorInfo> infos = tensor_infos();
  for (const auto& t : infos) {
    o.str(t.name);
    o.pod<uint32_t>(t.n_dims);
    for (uint32_t d = 0; d < t.n_dims; ++d) o.pod<uint64_t>(static_cast<uint64_t>(t.ne[d]));
    o.pod<uint32_t>(static_cast<uint32_t>(t.type));
    o.pod<uint64_t>(t.offset);
  }
  FLEA_CHECK(header.size() == header_bytes(), "header size disagrees with header_bytes()");
  FLEA_RETURN_IF_ERROR(append(header.data(), header.size()));
  FLEA_RETURN_IF_ERROR(pad_to(data_offset()));
  tensor_offsets_.clear();
  for (const auto& t : infos) tensor_offsets_.push_back(t.file_offset);
  cur_tensor_ = 0;
  cur_written_ = 0;
  return ok_status();
}

Status Writer::write_fd(const uint8_t* p, size_t n) {
  while (n > 0) {
    const ssize_t w = ::write(fd_, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      const int err = errno;
      return io_error("write " + tmp_path_ + " at byte " + std::to_string(file_pos_) + ": " + errno_text(err));
    }
    p += w;
    n -= static_cast<size_t>(w);
  }
  return ok_status();
}

Status Writer::flush_buffer() {
  if (buf_used_ == 0) return ok_status();
  Status st = write_fd(buf_.data(), buf_used_);
  buf_used_ = 0;
  return st;
}

Status Writer::append(const void* data, size_t n) {
  const auto* p = static_cast<const uint8_t*>(data);
  if (buf_used_ == 0 && n >= buf_.size()) {  // large writes skip the copy
    FLEA_RETURN_IF_ERROR(write_fd(p, n));
    file_pos_ += n;
    return ok_status();
  }
  while (n > 0) {
    const size_t take = std::min(n, buf_.size() - buf_used_);
    std::memcpy(buf_.data() + buf_used_, p, take);
    buf_used_ += take;
    file_pos_ += take;
    p += take;
    n -= take;
    if (buf_used_ == buf_.size()) FLEA_RETURN_IF_ERROR(flush_buffer());
  }
  return ok_status();
}

Status Writer::pad_to(uint64_t pos) {
  static const uint8_t kZeros[256] = {};
  while (file_pos_ < pos) {
    const size_t n = static_cast<size_t>(std::min<uint64_t>(pos - file_pos_, sizeof kZeros));
    FLEA_RETURN_IF_ERROR(append(kZeros, n));
  }
  return ok_status();
}

Status Writer::write(const void* data, size_t n_bytes) {
  if (fd_ < 0) return invalid_argument("gguf writer: write() before open()");
  const auto* p = static_cast<const uint8_t*>(data);
  while (n_bytes > 0) {
    if (cur_tensor_ >= decls_.size()) {
      return invalid_argument("gguf writer: " + std::to_string(n_bytes) +
                              " bytes of data past the last tensor");
    }
    if (cur_written_ == 0) FLEA_RETURN_IF_ERROR(pad_to(tensor_offsets_[cur_tensor_]));
    const uint64_t left = tensor_bytes_[cur_tensor_] - cur_written_;
    const size_t take = static_cast<size_t>(std::min<uint64_t>(left, n_bytes));
    FLEA_RETURN_IF_ERROR(append(p, take));
    cur_written_ += take;
    p += take;
    n_bytes -= take;
    if (cur_written_ == tensor_bytes_[cur_tensor_]) {
      ++cur_tensor_;
      cur_written_ = 0;
    }
  }
  return ok_status();
}

Status Writer::finish() {
  if (fd_ < 0) return invalid_argument("gguf writer: finish() before open()");
  // Zero-sized tensors cannot exist (every dimension > 0), so all data arrived iff cur_tensor_ ran off.
  if (cur_tensor_ < decls_.size()) {
    return invalid_argument("gguf writer: tensor '" + decls_[cur_tensor_].name + "' got " +
                            std::to_string(cur_written_) + " of " +
                            std::to_string(tensor_bytes_[cur_tensor_]) + " bytes");
  }
  FLEA_RETURN_IF_ERROR(pad_to(file_bytes()));
  FLEA_RETURN_IF_ERROR(flush_buffer());
  FLEA_CHECK(file_pos_ == file_bytes(), "written bytes disagree with the planned file size");
  if (::fsync(fd_) != 0) {
    const int err = errno;
    return io_error("fsync " + tmp_path_ + ": " + errno_text(err));
  }
  if (::close(fd_) != 0) {
    const int err = errno;
    fd_ = -1;
    return io_error("close " + tmp_path_ + ": " + errno_text(err));
  }
  fd_ = -1;
  if (::rename(tmp_path_.c_str(), path_.c_str()) != 0) {
    const int err = errno;
    return io_error("rename " + tmp_path_ + " to " + path_ + ": " + errno_text(err));
  }
  finished_ = true;
  buf_.clear();
  buf_.shrink_to_fit();
  return ok_status();
}

}  // namespace flea::gguf
