// GGUF v3 writer (little-endian). The caller declares every metadata key/value and every tensor up
// front, so the layout (header size, each tensor's offset, the file size) is known before a byte is
// written; tensor data is then streamed in declaration order and never held whole in memory.
// The file is written under a temporary name and renamed into place only after a successful fsync,
// so a crash or an error never leaves a half-written file under the final name.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "flea/status.h"
#include "gguf/gguf.h"

namespace flea::gguf {

// Metadata value builders (the reader's Value is the in-memory form both ways).
Value value_u8(uint8_t v);
Value value_i8(int8_t v);
Value value_u16(uint16_t v);
Value value_i16(int16_t v);
Value value_u32(uint32_t v);
Value value_i32(int32_t v);
Value value_u64(uint64_t v);
Value value_i64(int64_t v);
Value value_f32(float v);
Value value_f64(double v);
Value value_bool(bool v);
Value value_string(std::string v);
Value value_array_string(std::vector<std::string> v);
Value value_array_f32(const std::vector<float>& v);
Value value_array_f64(std::vector<double> v);
// Integer or bool array of element type `elem` (UINT8..INT64, BOOL); UINT64 elements bit-cast.
Value value_array_int(ValueType elem, std::vector<int64_t> v);

struct TensorDecl {
  std::string name;
  GgmlType type = GgmlType::F32;
  std::vector<int64_t> ne;  // ne[0] first (the contiguous row dimension), 1..4 dims
};

class Writer {
 public:
  static constexpr size_t kDefaultBufferBytes = size_t{8} << 20;

  Writer() = default;
  ~Writer();  // removes the temporary file unless finish() succeeded
  Writer(const Writer&) = delete;
  Writer& operator=(const Writer&) = delete;

  // Declaration phase. "general.alignment" (UINT32, power of two) also sets the data alignment.
  Status add_kv(const std::string& key, Value value);
  Status add_tensor(const TensorDecl& decl);

  // Layout, valid at any time during the declaration phase.
  uint64_t alignment() const { return alignment_; }
  uint64_t header_bytes() const;  // magic .. tensor infos, without the padding
  uint64_t data_offset() const;   // header_bytes rounded up to the alignment
  uint64_t file_bytes() const;    // data_offset + every tensor padded to the alignment
  // Declared tensors with offset / file_offset / n_bytes filled in.
  std::vector<TensorInfo> tensor_infos() const;

  // Streaming phase: open() writes the header to `path`.tmp-<pid>; write() takes the tensor data
  // bytes in declaration order (any chunking; padding between tensors is inserted here); finish()
  // checks every byte was supplied, fsyncs and renames onto `path`.
  Status open(const std::string& path, size_t buffer_bytes = kDefaultBufferBytes);
  Status write(const void* data, size_t n_bytes);
  Status finish();
  uint64_t bytes_written() const { return file_pos_; }

 private:
  Status flush_buffer();
  Status write_fd(const uint8_t* p, size_t n);
  Status append(const void* data, size_t n);
  Status pad_to(uint64_t pos);
  void abandon();

  std::vector<KeyValue> kv_;
  std::vector<TensorDecl> decls_;
  std::vector<uint64_t> tensor_bytes_;
  std::vector<uint64_t> tensor_offsets_;  // relative to the data section
  uint64_t alignment_ = kDefaultAlignment;
  uint64_t data_bytes_ = 0;

  std::string path_, tmp_path_;
  int fd_ = -1;
  bool finished_ = false;
  std::vector<uint8_t> buf_;
  size_t buf_used_ = 0;
  uint64_t file_pos_ = 0;      // bytes handed to the file so far (buffered or written)
  size_t cur_tensor_ = 0;      // tensor whose data write() is filling
  uint64_t cur_written_ = 0;   // bytes of it received so far
};

}  // namespace flea::gguf
