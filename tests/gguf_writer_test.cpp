// GGUF writer: round trips through the reader (every value type, arrays, alignment, offsets,
// streamed data) and refuses bad declarations and incomplete data without leaving files behind.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>

#include "gguf/gguf.h"
#include "gguf/writer.h"
#include "test_util.h"

namespace flea::gguf {
namespace {

using test::TempDir;

uint8_t pattern_byte(size_t tensor, uint64_t i) { return static_cast<uint8_t>((i * 131 + tensor * 17 + 1) & 0xFF); }

std::vector<std::string> dir_entries(const std::string& dir) {
  std::vector<std::string> out;
  for (const auto& e : std::filesystem::directory_iterator(dir)) out.push_back(e.path().filename().string());
  return out;
}

TEST(GgufWriter, RoundTripsEveryValueTypeAndStreamedData) {
  TempDir dir;
  const std::string path = dir.file("all.gguf");
  Writer w;
  ASSERT_TRUE(w.add_kv("general.alignment", value_u32(64)).ok());
  ASSERT_TRUE(w.add_kv("t.u8", value_u8(250)).ok());
  ASSERT_TRUE(w.add_kv("t.i8", value_i8(-7)).ok());
  ASSERT_TRUE(w.add_kv("t.u16", value_u16(65000)).ok());
  ASSERT_TRUE(w.add_kv("t.i16", value_i16(-30000)).ok());
  ASSERT_TRUE(w.add_kv("t.u32", value_u32(4000000000u)).ok());
  ASSERT_TRUE(w.add_kv("t.i32", value_i32(-2000000000)).ok());
  ASSERT_TRUE(w.add_kv("t.u64", value_u64(18000000000000000000ull)).ok());
  ASSERT_TRUE(w.add_kv("t.i64", value_i64(-9000000000000000000ll)).ok());
  ASSERT_TRUE(w.add_kv("t.f32", value_f32(1.5f)).ok());
  ASSERT_TRUE(w.add_kv("t.f64", value_f64(-2.25e100)).ok());
  ASSERT_TRUE(w.add_kv("t.bool", value_bool(true)).ok());
  ASSERT_TRUE(w.add_kv("t.str", value_string("h\xC3\xA9llo")).ok());
  ASSERT_TRUE(w.add_kv("t.empty_str", value_string("")).ok());
  ASSERT_TRUE(w.add_kv("t.arr_str", value_array_string({"a", "", "\xE2\x96\x81x"})).ok());
  ASSERT_TRUE(w.add_kv("t.arr_f32", value_array_f32({0.5f, -1.0f})).ok());
  ASSERT_TRUE(w.add_kv("t.arr_f64", value_array_f64({1e-300, 3.0})).ok());
  ASSERT_TRUE(w.add_kv("t.arr_i32", value_array_int(ValueType::INT32, {-1, 2, 3})).ok());
  ASSERT_TRUE(w.add_kv("t.arr_u8", value_array_int(ValueType::UINT8, {0, 255})).ok());
  ASSERT_TRUE(w.add_kv("t.arr_i16", value_array_int(ValueType::INT16, {-32768})).ok());
  ASSERT_TRUE(w.add_kv("t.arr_u64", value_array_int(ValueType::UINT64, {static_cast<int64_t>(~0ull)})).ok());
  ASSERT_TRUE(w.add_kv("t.arr_bool", value_array_int(ValueType::BOOL, {1, 0, 1})).ok());
  ASSERT_TRUE(w.add_kv("t.arr_empty", value_array_int(ValueType::INT64, {})).ok());

  const std::vector<TensorDecl> decls = {
      {"a.f32", GgmlType::F32, {7}},               // 28 bytes: exercises padding
      {"b.q4k", GgmlType::Q4_K, {512, 3}},         // 864 bytes
      {"c.f16", GgmlType::F16, {3, 5, 2}},         // 60 bytes, 3 dims
      {"d.q80", GgmlType::Q8_0, {32, 1, 2, 3}},    // 4 dims
      {"e.q6k", GgmlType::Q6_K, {256, 2}},
  };
  for (const auto& d : decls) ASSERT_TRUE(w.add_tensor(d).ok()) << d.name;
  const std::vector<TensorInfo> planned = w.tensor_infos();
  EXPECT_EQ(w.alignment(), 64u);
  EXPECT_EQ(w.data_offset() % 64, 0u);

  ASSERT_TRUE(w.open(path, 4096).ok());
  // Stream the data in odd chunk sizes that straddle tensor boundaries.
  std::vector<uint8_t> all;
  for (size_t t = 0; t < planned.size(); ++t) {
    for (uint64_t i = 0; i < planned[t].n_bytes; ++i) all.push_back(pattern_byte(t, i));
  }
  for (size_t pos = 0; pos < all.size();) {
    const size_t n = std::min<size_t>(all.size() - pos, 1 + (pos * 7) % 301);
    ASSERT_TRUE(w.write(all.data() + pos, n).ok());
    pos += n;
  }
  EXPECT_FALSE(std::filesystem::exists(path)) << "final name must not appear before finish()";
  ASSERT_TRUE(w.finish().ok());

  auto f = read_file(path);
  ASSERT_TRUE(f.ok()) << f.status().message();
  EXPECT_EQ(f->version, 3u);
  EXPECT_EQ(f->file_size, w.file_bytes());
  EXPECT_EQ(f->alignment, 64u);
  EXPECT_EQ(f->data_offset, w.data_offset());
  ASSERT_EQ(f->kv.size(), 23u);
  auto get = [&](const char* k) -> const Value& {
    const Value* v = f->find(k);
    EXPECT_NE(v, nullptr) << k;
    static Value none;
    return v ? *v : none;
  };
  EXPECT_EQ(get("t.u8").type, ValueType::UINT8);
  EXPECT_EQ(get("t.u8").u, 250u);
  EXPECT_EQ(get("t.i8").i, -7);
  EXPECT_EQ(get("t.u16").u, 65000u);
  EXPECT_EQ(get("t.i16").i, -30000);
  EXPECT_EQ(get("t.u32").u, 4000000000u);
  EXPECT_EQ(get("t.i32").i, -2000000000);
  EXPECT_EQ(get("t.u64").u, 18000000000000000000ull);
  EXPECT_EQ(get("t.i64").i, -9000000000000000000ll);
  EXPECT_EQ(get("t.f32").type, ValueType::FLOAT32);
  EXPECT_EQ(get("t.f32").f, 1.5);
  EXPECT_EQ(get("t.f64").f, -2.25e100);
  EXPECT_EQ(get("t.bool").type, ValueType::BOOL);
  EXPECT_EQ(get("t.bool").i, 1);
  EXPECT_EQ(get("t.str").s, "h\xC3\xA9llo");
  EXPECT_EQ(get("t.empty_str").s, "");
  EXPECT_EQ(get("t.arr_str").arr_str, (std::vector<std::string>{"a", "", "\xE2\x96\x81x"}));
  EXPECT_EQ(get("t.arr_f32").array_type, ValueType::FLOAT32);
  EXPECT_EQ(get("t.arr_f32").arr_float, (std::vector<double>{0.5, -1.0}));
  EXPECT_EQ(get("t.arr_f64").arr_float, (std::vector<double>{1e-300, 3.0}));
  EXPECT_EQ(get("t.arr_i32").arr_int, (std::vector<int64_t>{-1, 2, 3}));
  EXPECT_EQ(get("t.arr_u8").arr_int, (std::vector<int64_t>{0, 255}));
  EXPECT_EQ(get("t.arr_i16").arr_int, (std::vector<int64_t>{-32768}));
  EXPECT_EQ(get("t.arr_u64").arr_int, (std::vector<int64_t>{static_cast<int64_t>(~0ull)}));
  EXPECT_EQ(get("t.arr_bool").array_type, ValueType::BOOL);
  EXPECT_EQ(get("t.arr_bool").arr_int, (std::vector<int64_t>{1, 0, 1}));
  EXPECT_EQ(get("t.arr_empty").array_size(), 0u);
  EXPECT_EQ(f->kv[1].key, "t.u8") << "keys keep declaration order";

  const std::vector<uint8_t> bytes = test::read_bytes(path);
  ASSERT_EQ(f->tensors.size(), decls.size());
  for (size_t t = 0; t < decls.size(); ++t) {
    const TensorInfo& got = f->tensors[t];
    EXPECT_EQ(got.name, decls[t].name);
    EXPECT_EQ(got.type, decls[t].type);
    EXPECT_EQ(got.n_dims, decls[t].ne.size());
    for (size_t d = 0; d < decls[t].ne.size(); ++d) EXPECT_EQ(got.ne[d], decls[t].ne[d]);
    EXPECT_EQ(got.offset, planned[t].offset);
    EXPECT_EQ(got.file_offset, planned[t].file_offset);
    EXPECT_EQ(got.n_bytes, planned[t].n_bytes);
    EXPECT_EQ(got.file_offset % 64, 0u) << got.name;
    for (uint64_t i = 0; i < got.n_bytes; ++i) {
      ASSERT_EQ(bytes[got.file_offset + i], pattern_byte(t, i)) << got.name << " byte " << i;
    }
    // Padding after each tensor up to the next aligned offset is zero.
    const uint64_t end = t + 1 < decls.size() ? f->tensors[t + 1].file_offset : bytes.size();
    for (uint64_t p = got.file_offset + got.n_bytes; p < end; ++p) ASSERT_EQ(bytes[p], 0) << "pad at " << p;
  }
  EXPECT_EQ(f->tensors[0].n_bytes, 28u);
  EXPECT_EQ(f->tensors[1].offset, 64u) << "28 bytes padded to the 64-byte alignment";
  EXPECT_EQ(bytes.size() % 64, 0u) << "the last tensor is padded too";
  EXPECT_EQ(dir_entries(dir.path()), std::vector<std::string>{"all.gguf"}) << "no temporary left";
}

TEST(GgufWriter, DefaultAlignmentIs32AndHeaderSizeIsExact) {
  TempDir dir;
  Writer w;
  ASSERT_TRUE(w.add_kv("general.architecture", value_string("llama")).ok());
  ASSERT_TRUE(w.add_tensor({"x", GgmlType::F32, {3}}).ok());
  ASSERT_TRUE(w.add_tensor({"y", GgmlType::F32, {5}}).ok());
  // 24 header + (8+20+4+8+5) kv + 2 tensor infos (8+1+4+8+4+8 each).
  EXPECT_EQ(w.header_bytes(), 24u + 45u + 2 * 33u);
  EXPECT_EQ(w.data_offset(), 160u);
  EXPECT_EQ(w.tensor_infos()[1].offset, 32u);
  EXPECT_EQ(w.file_bytes(), 160u + 32u + 32u);
  ASSERT_TRUE(w.open(dir.file("m.gguf")).ok());
  const float data[8] = {1, 2, 3, 4, 5, 6, 7, 8};
  ASSERT_TRUE(w.write(data, sizeof data).ok());
  ASSERT_TRUE(w.finish().ok());
  auto f = read_file(dir.file("m.gguf"));
  ASSERT_TRUE(f.ok()) << f.status().message();
  EXPECT_EQ(f->alignment, 32u);
  EXPECT_EQ(f->data_offset, 160u);
  EXPECT_EQ(f->file_size, 224u);
}

TEST(GgufWriter, RejectsBadDeclarations) {
  Writer w;
  EXPECT_FALSE(w.add_kv("", value_u8(1)).ok());
  ASSERT_TRUE(w.add_kv("k", value_u8(1)).ok());
  EXPECT_FALSE(w.add_kv("k", value_u8(2)).ok()) << "duplicate key";
  Value nested = value_array_int(ValueType::INT32, {1});
  nested.array_type = ValueType::ARRAY;
  EXPECT_FALSE(w.add_kv("nested", nested).ok());
  EXPECT_FALSE(w.add_kv("general.alignment", value_u32(48)).ok()) << "not a power of two";
  EXPECT_FALSE(w.add_kv("general.alignment", value_u64(64)).ok()) << "must be UINT32";
  ASSERT_TRUE(w.add_tensor({"t", GgmlType::Q4_K, {256}}).ok());
  EXPECT_FALSE(w.add_tensor({"t", GgmlType::F32, {1}}).ok()) << "duplicate tensor";
  EXPECT_FALSE(w.add_tensor({"q", GgmlType::Q4_K, {128}}).ok()) << "row not a multiple of 256";
  EXPECT_FALSE(w.add_tensor({"z", GgmlType::F32, {4, 0}}).ok()) << "zero dimension";
  EXPECT_FALSE(w.add_tensor({"5d", GgmlType::F32, {1, 1, 1, 1, 1}}).ok());
  EXPECT_FALSE(w.add_tensor({"", GgmlType::F32, {1}}).ok());
  EXPECT_FALSE(w.add_tensor({std::string(64, 'n'), GgmlType::F32, {1}}).ok()) << "name over 63 bytes";
  EXPECT_FALSE(w.add_tensor({"u", static_cast<GgmlType>(99), {1}}).ok()) << "unknown type";
}

TEST(GgufWriter, IncompleteOrExcessDataLeavesNoFile) {
  TempDir dir;
  const std::string path = dir.file("short.gguf");
  {
    Writer w;
    ASSERT_TRUE(w.add_tensor({"t", GgmlType::F32, {16}}).ok());
    ASSERT_TRUE(w.open(path).ok());
    const float data[16] = {};
    ASSERT_TRUE(w.write(data, 40).ok());
    const Status st = w.finish();
    EXPECT_FALSE(st.ok());
    EXPECT_NE(st.message().find("40 of 64"), std::string::npos) << st.message();
    EXPECT_FALSE(w.write(data, 64).ok()) << "24 bytes left, 64 offered";
  }
  EXPECT_TRUE(dir_entries(dir.path()).empty()) << "the temporary is removed";
}

TEST(GgufWriter, UnwritableDirectoryNamesPathAndErrno) {
  Writer w;
  ASSERT_TRUE(w.add_tensor({"t", GgmlType::F32, {1}}).ok());
  const Status st = w.open("/nonexistent-dir-flea/m.gguf");
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.code(), StatusCode::kIoError);
  EXPECT_NE(st.message().find("/nonexistent-dir-flea/m.gguf"), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("No such file or directory"), std::string::npos) << st.message();
}

}  // namespace
}  // namespace flea::gguf
