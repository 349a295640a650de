#include "salad/data/feature_cache.h"

#include <torch/torch.h>

#include <fstream>

#include "salad/core/error.h"
#include "test_util.h"

namespace salad::data {
namespace {

FeatureCacheMeta meta(int64_t dim = 4) {
  FeatureCacheMeta m;
  m.encoder = "fbank n_mels=2";
  m.feature_dim = dim;
  return m;
}

TEST(FeatureCacheTest, WritesShardsAndReadsBack) {
  test::TempDir d;
  std::map<std::string, at::Tensor> ref;
  {
    FeatureCacheWriter w(d / "c", meta(), /*shard_bytes=*/200);
    for (int i = 0; i < 7; ++i) {
      const std::string id = "utt/" + std::to_string(i);  // any string is a valid tensor name
      ref[id] = torch::randn({i + 3, 4});
      w.add(id, ref[id]);
    }
    w.flush();
    EXPECT_GE(w.shards_written(), 3);
    EXPECT_EQ(w.finished(), 7);
  }
  const FeatureCache c = FeatureCache::open(d / "c");
  EXPECT_EQ(c.size(), 7u);
  EXPECT_EQ(c.meta(), meta());
  for (const auto& [id, t] : ref) {
    EXPECT_EQ(c.frames(id), t.size(0));
    EXPECT_TRUE(c.get(id).equal(t)) << id;
  }
  test::expect_error<DataError>([&] { c.get("nope"); }, {"no features for utterance 'nope'"});
  // Shards are plain safetensors: any reader lists the utterances.
  const auto shard = safetensors::File::open(d / "c/shard-000000.safetensors");
  EXPECT_EQ(shard->metadata().at("encoder"), "fbank n_mels=2");
}

TEST(FeatureCacheTest, ResumeKeepsFinishedShardsAndDropsUnflushed) {
  test::TempDir d;
  {
    FeatureCacheWriter w(d / "c", meta(), 1 << 20);
    w.add("a", torch::ones({2, 4}));
    w.flush();
    w.add("b", torch::ones({2, 4}));  // never flushed: the "interrupted" part
  }
  FeatureCacheWriter w(d / "c", meta(), 1 << 20);
  EXPECT_TRUE(w.contains("a"));
  EXPECT_FALSE(w.contains("b"));
  w.add("b", torch::zeros({3, 4}));
  w.flush();
  const FeatureCache c = FeatureCache::open(d / "c");
  EXPECT_EQ(c.size(), 2u);
  EXPECT_EQ(c.frames("b"), 3);
  EXPECT_TRUE(std::filesystem::exists(d / "c/shard-000001.safetensors"));
}

TEST(FeatureCacheTest, ShardMissingFromTheIndexIsRecovered) {
  test::TempDir d;
  {
    FeatureCacheWriter w(d / "c", meta(), 1 << 20);
    w.add("a", torch::ones({2, 4}));
    w.flush();
    w.add("b", torch::ones({5, 4}));
    w.flush();
  }
  // Simulate a crash between renaming shard 1 and appending its index line, with a torn line.
  std::string idx = test::read_text(d / "c/index.jsonl");
  idx = idx.substr(0, idx.find('\n') + 1) + "{\"id\": \"b\", \"sha";
  test::write_text(d / "c/index.jsonl", idx);
  const FeatureCache c = FeatureCache::open(d / "c");
  EXPECT_EQ(c.size(), 2u);
  EXPECT_EQ(c.frames("b"), 5);
  FeatureCacheWriter w(d / "c", meta(), 1 << 20);
  EXPECT_TRUE(w.contains("b"));
}

TEST(FeatureCacheTest, MismatchedEncoderAndBadInput) {
  test::TempDir d;
  { FeatureCacheWriter w(d / "c", meta(4)); }
  FeatureCacheMeta other = meta(4);
  other.encoder = "mimi latent";
  test::expect_error<DataError>([&] { FeatureCacheWriter w(d / "c", other); },
                                {"made with encoder 'fbank n_mels=2'", "asks for 'mimi latent'"});
  FeatureCacheWriter w(d / "c", meta(4));
  test::expect_error<Error>(
      [&] {
        w.add("x", torch::ones({2, 5}));
      },
      {"utterance 'x'", "expected [frames, 4] F32"});
  w.add("y", torch::ones({1, 4}));
  test::expect_error<DataError>(
      [&] {
        w.add("y", torch::ones({1, 4}));
      },
      {"'y' is already cached"});
  test::expect_error<IoError>([&] { FeatureCache::open(d.path()); }, {"not a feature cache"});
}

}  // namespace
}  // namespace salad::data
