#include "salad/core/safetensors.h"

#include <torch/torch.h>

#include <cstring>

#include "salad/core/error.h"
#include "test_util.h"

namespace salad::safetensors {
namespace {

using test::expect_error;
using test::TempDir;

/// Writes a raw safetensors file: 8-byte length, header text, data bytes.
void write_raw(const fs::path& p, const std::string& header, const std::string& data,
               int64_t claimed_len = -1) {
  uint64_t n = claimed_len >= 0 ? static_cast<uint64_t>(claimed_len) : header.size();
  std::string bytes(reinterpret_cast<const char*>(&n), 8);
  test::write_text(p, bytes + header + data);
}

TEST(SafetensorsTest, RoundTripsEveryDtypeAndMetadata) {
  TempDir d;
  torch::manual_seed(0);
  NamedTensors ts = {
      {"f64", torch::randn({3, 2}, torch::kDouble)},
      {"f32", torch::randn({5}, torch::kFloat)},
      {"f16", torch::randn({3}, torch::kFloat).to(torch::kHalf)},  // odd byte count first
      {"bf16", torch::randn({2, 3}, torch::kFloat).to(torch::kBFloat16)},
      {"i64", torch::arange(-3, 4, torch::kLong)},
      {"i32", torch::arange(0, 7, torch::kInt)},
      {"i16", torch::arange(-2, 1, torch::kShort)},
      {"i8", torch::arange(-128, 127, 50, torch::kChar)},
      {"u8", torch::arange(250, 256, torch::kByte)},
      {"bool", torch::tensor({true, false, true})},
      {"scalar", torch::tensor(2.5)},
      {"empty", torch::zeros({0, 4})},
      {"strided", torch::arange(12, torch::kFloat).reshape({3, 4}).t()},
  };
  save(d / "a.safetensors", ts, {{"format", "pt"}, {"step", "12"}});
  const auto f = File::open(d / "a.safetensors");
  EXPECT_EQ(f->metadata().at("step"), "12");
  ASSERT_EQ(f->tensors().size(), ts.size());
  for (const auto& [name, t] : ts) {
    const at::Tensor r = f->get(name);
    EXPECT_EQ(r.scalar_type(), t.scalar_type()) << name;
    EXPECT_EQ(r.sizes(), t.sizes()) << name;
    EXPECT_TRUE(r.equal(t.contiguous())) << name;
    // Saved in decreasing element size, every tensor is aligned and so a zero-copy view.
    EXPECT_EQ(reinterpret_cast<uintptr_t>(r.data_ptr()) % r.element_size(), 0u) << name;
  }
  EXPECT_EQ(f->find("bf16")->dtype, "BF16");
  EXPECT_EQ(f->find("nope"), nullptr);
}

TEST(SafetensorsTest, ViewsOutliveTheFileObjectAndWritesDoNotReachTheFile) {
  TempDir d;
  save(d / "a.safetensors", {{"x", torch::ones({4})}});
  at::Tensor x;
  {
    auto f = File::open(d / "a.safetensors");
    x = f->get("x");
  }
  x.mul_(3);  // private copy-on-write mapping
  EXPECT_TRUE(x.equal(torch::full({4}, 3.0)));
  EXPECT_TRUE(File::open(d / "a.safetensors")->get("x").equal(torch::ones({4})));
}

TEST(SafetensorsTest, MisalignedDataIsCopied) {
  TempDir d;
  // Header of 3 bytes of padding-free JSON would misalign; build one whose data start is odd.
  const float v[2] = {1.5f, -2.0f};
  std::string data(1, '\0');  // one byte of U8 first pushes the F32 to an odd offset
  data.append(reinterpret_cast<const char*>(v), 8);
  write_raw(d / "m.safetensors",
            R"({"b":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},)"
            R"("x":{"dtype":"F32","shape":[2],"data_offsets":[1,9]}})",
            data);
  const at::Tensor x = File::open(d / "m.safetensors")->get("x");
  EXPECT_FLOAT_EQ(x[0].item<float>(), 1.5f);
  EXPECT_FLOAT_EQ(x[1].item<float>(), -2.0f);
}

TEST(SafetensorsTest, ReadsTheQwen2FixtureSingleFileAndSharded) {
  const auto tied = Checkpoint::open(test::data_dir() / "qwen2/qwen2_tiny_tied");
  EXPECT_EQ(tied.files().size(), 1u);
  EXPECT_FALSE(tied.contains("lm_head.weight"));
  const auto& emb = tied.info("model.embed_tokens.weight");
  EXPECT_EQ(emb.dtype, "BF16");
  EXPECT_EQ(emb.shape, (std::vector<int64_t>{320, 64}));
  EXPECT_EQ(tied.get("model.embed_tokens.weight").scalar_type(), torch::kBFloat16);

  const auto untied = Checkpoint::open(test::data_dir() / "qwen2/qwen2_tiny_untied");
  EXPECT_EQ(untied.files().size(), 2u);
  EXPECT_TRUE(untied.contains("lm_head.weight"));
  const auto via_index =
      Checkpoint::open(test::data_dir() / "qwen2/qwen2_tiny_untied/model.safetensors.index.json");
  EXPECT_EQ(via_index.names(), untied.names());
  EXPECT_EQ(untied.info("lm_head.weight").shape, (std::vector<int64_t>{352, 96}));
  EXPECT_EQ(untied.file_of("model.layers.1.input_layernorm.weight").filename(),
            "model-00002-of-00002.safetensors");
  int64_t total = 0;
  for (const auto& n : untied.names()) total += untied.get(n).numel();
  EXPECT_EQ(untied.total_numel(), total);
  EXPECT_THROW(untied.get("nope"), CheckpointError);
}

struct BadCase {
  const char* name;
  std::string header;
  std::string data;
  int64_t claimed_len;
  std::vector<std::string> fragments;
};

TEST(SafetensorsTest, BadFilesGiveErrorsNamingFileAndProblem) {
  TempDir d;
  const std::string f32x2 = std::string(8, '\0');
  const std::vector<BadCase> cases = {
      {"header_len_past_end",
       R"({"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})",
       f32x2,
       1 << 20,
       {"header length 1048576 runs past the end of the file"}},
      {"not_json", "{not json", "", -1, {"header is not valid JSON"}},
      {"not_object", "[1,2]", "", -1, {"header is not a JSON object"}},
      {"past_data",
       R"({"x":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})",
       f32x2,
       -1,
       {"tensor 'x'", "data_offsets [0, 16) run past the data section (8 bytes"}},
      {"overlap",
       R"({"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
       R"("y":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
       f32x2,
       -1,
       {"overlaps tensor"}},
      {"byte_length",
       R"({"x":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})",
       f32x2,
       -1,
       {"tensor 'x'", "dtype F32 and shape [3] need 12 bytes, data_offsets give 8"}},
      {"unknown_dtype",
       R"({"x":{"dtype":"F12","shape":[2],"data_offsets":[0,8]}})",
       f32x2,
       -1,
       {"tensor 'x'", "unknown safetensors dtype 'F12'"}},
      {"negative_dim",
       R"({"x":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})",
       f32x2,
       -1,
       {"tensor 'x'", "shape has a non-integer or negative entry"}},
      {"missing_dtype",
       R"({"x":{"shape":[2],"data_offsets":[0,8]}})",
       f32x2,
       -1,
       {"missing string 'dtype'"}},
      {"reversed_offsets",
       R"({"x":{"dtype":"U8","shape":[0],"data_offsets":[8,0]}})",
       f32x2,
       -1,
       {"end before they begin"}},
      {"bad_metadata",
       R"({"__metadata__":{"a":1}})",
       "",
       -1,
       {"__metadata__['a'] is not a string"}},
  };
  for (const auto& c : cases) {
    const fs::path p = d / (std::string(c.name) + ".safetensors");
    write_raw(p, c.header, c.data, c.claimed_len);
    std::vector<std::string> frags = c.fragments;
    frags.push_back(p.string() + ": ");
    try {
      File::open(p);
      ADD_FAILURE() << c.name << ": no error";
    } catch (const IoError& e) {
      for (const auto& f : frags) {
        EXPECT_NE(std::string(e.what()).find(f), std::string::npos) << c.name << ": " << e.what();
      }
    }
  }
}

TEST(SafetensorsTest, ShortAndMissingFiles) {
  TempDir d;
  test::write_text(d / "short.safetensors", "abc");
  expect_error<IoError>(
      [&] { File::open(d / "short.safetensors"); },
      {(d / "short.safetensors").string(), "file is 3 bytes, shorter than the 8-byte"});
  test::write_text(d / "empty.safetensors", "");
  expect_error<IoError>([&] { File::open(d / "empty.safetensors"); }, {"file is 0 bytes"});
  expect_error<IoError>([&] { File::open(d / "absent.safetensors"); },
                        {"absent.safetensors", "cannot open"});
  expect_error<IoError>([&] { Checkpoint::open(d / "absent"); }, {"no such file or folder"});
  expect_error<IoError>([&] { File::open(d.path()); }, {"not a regular file"});
}

TEST(SafetensorsTest, TruncatedRealCheckpointIsDetected) {
  TempDir d;
  const std::string full =
      test::read_text(test::data_dir() / "qwen2/qwen2_tiny_tied/model.safetensors");
  test::write_text(d / "t.safetensors", full.substr(0, full.size() - 100));
  expect_error<IoError>([&] { File::open(d / "t.safetensors"); }, {"run past the data section"});
}

TEST(SafetensorsTest, ShardIndexMustMatchTheShards) {
  TempDir d;
  save(d / "s1.safetensors", {{"a", torch::ones({2})}, {"b", torch::ones({1})}});
  test::write_text(d / "i.safetensors.index.json",
                   R"({"weight_map":{"a":"s1.safetensors","c":"s1.safetensors"}})");
  expect_error<IoError>([&] { Checkpoint::open(d / "i.safetensors.index.json"); },
                        {"i.safetensors.index.json", "puts tensor 'c' in s1.safetensors"});
  test::write_text(d / "i.safetensors.index.json", R"({"weight_map":{"a":"s1.safetensors"}})");
  expect_error<IoError>([&] { Checkpoint::open(d / "i.safetensors.index.json"); },
                        {"tensor 'b'", "missing from weight_map"});
  test::write_text(d / "i.safetensors.index.json", R"({"weight_map":{"a":"s9.safetensors"}})");
  expect_error<IoError>([&] { Checkpoint::open(d / "i.safetensors.index.json"); },
                        {"s9.safetensors", "cannot open"});
  test::write_text(d / "i.safetensors.index.json", R"({"weights":{}})");
  expect_error<IoError>([&] { Checkpoint::open(d / "i.safetensors.index.json"); },
                        {"'weight_map'"});
}

TEST(SafetensorsTest, FolderWithNothingToOpen) {
  TempDir d;
  expect_error<IoError>([&] { Checkpoint::open(d.path()); },
                        {d.path().string(), "expected model.safetensors"});
}

TEST(SafetensorsTest, SaveRejectsBadInputAndKeepsTheOldFile) {
  TempDir d;
  save(d / "a.safetensors", {{"x", torch::ones({2})}});
  expect_error<Error>(
      [&] {
        save(d / "a.safetensors", {{"x", torch::ones({1})}, {"x", torch::ones({1})}});
      },
      {"duplicate tensor name 'x'"});
  expect_error<Error>(
      [&] {
        save(d / "a.safetensors", {{"c", torch::ones({1}, torch::kComplexFloat)}});
      },
      {"tensor 'c'", "has no safetensors dtype"});
  EXPECT_TRUE(File::open(d / "a.safetensors")->get("x").equal(torch::ones({2})));
  size_t files = 0;
  for (const auto& e : fs::directory_iterator(d.path())) files += e.is_regular_file();
  EXPECT_EQ(files, 1u) << "a temp file was left behind";
}

TEST(SafetensorsTest, WritesAreReadableByTheHeaderRules) {
  // The data section starts 8-byte aligned and tensors are contiguous without gaps, as the
  // reference reader requires.
  TempDir d;
  save(d / "a.safetensors",
       {{"h", torch::ones({3}, torch::kHalf)}, {"d", torch::ones({1}, torch::kDouble)}});
  const std::string bytes = test::read_text(d / "a.safetensors");
  uint64_t n;
  std::memcpy(&n, bytes.data(), 8);
  EXPECT_EQ(n % 8, 0u);
  const auto f = File::open(d / "a.safetensors");
  EXPECT_EQ(f->tensors()[0].name, "d");
  EXPECT_EQ(f->tensors()[0].begin, 0u);
  EXPECT_EQ(f->tensors()[1].begin, 8u);
  EXPECT_EQ(8 + n + 8 + 6, bytes.size());
}

}  // namespace
}  // namespace salad::safetensors
