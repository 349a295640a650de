// salad-export: a fake run folder in the trainer's checkpoint format is exported to a Hugging
// Face-style folder; the decoder reloads through load_qwen2 with exactly the student's logits and
// the adapter round-trips. Also scripts/plot_run.py on a synthetic metrics.jsonl (ExportPlot*).
#include <torch/torch.h>
#include <nlohmann/json.hpp>

#include <cstdio>

#include "models/speech_lm_fixture.h"
#include "salad/core/config.h"
#include "salad/core/error.h"
#include "salad/core/safetensors.h"
#include "salad/dist/comm.h"
#include "salad/models/weight_loader.h"
#include "salad/train/checkpoint.h"
#include "salad/train/export.h"
#include "test_util.h"
#include "train/train_test_util.h"

namespace salad::train {
namespace {

namespace fs = std::filesystem;
namespace fx = models::test_fixture;
using json = nlohmann::json;
using test::expect_error;
using test::TempDir;

const std::string kExport = SALAD_EXPORT_EXE;

// The recipe the fixture's tiny student and adapter were built from (speech_lm_fixture.h).
config::SaladConfig tiny_config(const fs::path& run_dir, const fs::path& tokenizer) {
  config::SaladConfig c;
  c.run.dir = run_dir;
  c.run.stage = "1";
  c.model.tokenizer = tokenizer;
  auto& a = c.model.arch;
  const models::Qwen2Options d = fx::tiny_decoder();
  a.vocab_size = 0;  // from the tokenizer at train time; the export reads the embedding's rows
  a.hidden_size = d.hidden_size;
  a.intermediate_size = d.intermediate_size;
  a.num_hidden_layers = d.num_hidden_layers;
  a.num_attention_heads = d.num_attention_heads;
  a.num_key_value_heads = d.num_key_value_heads;
  a.tie_word_embeddings = d.tie_word_embeddings;
  c.encoder.type = "fbank";
  c.encoder.n_mels = fx::kFeat / 8;  // 8 stacked 10 ms frames of 1 band: 8-d, as the adapter
  const models::AdapterOptions ad = fx::tiny_adapter();
  c.adapter.hidden_size = ad.hidden_size;
  c.adapter.num_layers = ad.num_layers;
  c.adapter.num_heads = ad.num_heads;
  c.adapter.num_kv_heads = ad.num_kv_heads;
  c.adapter.intermediate_size = ad.intermediate_size;
  return c;
}

// One checkpoint folder exactly as the trainer writes it, committed by the trainer's own
// CheckpointStore (manifest with every file's size, `latest` rewritten). `config_text` replaces
// the resolved config's YAML when given.
fs::path write_checkpoint(const fs::path& run_dir, int64_t step,
                          const safetensors::NamedTensors& state, const config::SaladConfig& cfg,
                          const std::string& config_text = "") {
  const CheckpointStore store(run_dir);
  store.prepare(step);
  const fs::path dir = store.staging(step);
  safetensors::save(dir / "model.safetensors", state,
                    {{"format", "salad-trainable"}, {"step", std::to_string(step)}});
  if (config_text.empty()) {
    config::write_yaml(cfg, dir / "config.resolved.yaml");
  } else {
    test::write_text(dir / "config.resolved.yaml", config_text);
  }
  test::write_text(dir / "trainer.json", "{\"step\": " + std::to_string(step) + "}\n");
  test::write_text(dir / "rank-00000.json", "{}\n");
  safetensors::save(dir / "optimizer-rank-00000.safetensors",
                    {{"state.0.exp_avg", torch::ones({2})}});
  store.commit(step, /*world_size=*/1, /*keep_last=*/0);
  config::write_yaml(cfg, run_dir / "config.resolved.yaml");
  return store.folder(step);
}

void randomize(torch::nn::Module& m, uint64_t seed) {
  torch::manual_seed(seed);
  torch::NoGradGuard no_grad;
  for (auto& p : m.parameters()) p.normal_(0.0, 0.3);
}

safetensors::NamedTensors without(safetensors::NamedTensors state, const std::string& name) {
  state.erase(
      std::remove_if(state.begin(), state.end(), [&](const auto& t) { return t.first == name; }),
      state.end());
  return state;
}

json read_json(const fs::path& p) { return json::parse(test::read_text(p)); }

at::Tensor ids() {
  return torch::tensor({{1, 7, 3, 42, 9, 0, 49, 12}, {5, 5, 6, 30, 2, 8, 1, 44}});
}

// A student (tiny Qwen2, tied head) and an adapter with non-trivial weights, and a run folder
// holding one checkpoint of them.
struct FakeRun {
  TempDir tmp;
  fx::Fixture f;
  fs::path run = tmp / "run";
  fs::path tokenizer = tmp / "assets" / "qwen-tokenizer.json";
  config::SaladConfig cfg = tiny_config(run, tokenizer);
  fs::path ckpt;

  FakeRun() {
    randomize(*f.lm.adapter(), 7);
    test::write_text(tokenizer, "{\"model\": {\"type\": \"BPE\"}, \"note\": \"fake\"}\n");
    ckpt = write_checkpoint(run, 200, f.lm.state(), cfg);
  }
  ExportOptions options(const std::string& out_name = "export") const {
    ExportOptions o;
    o.run_dir = run;
    o.out = tmp / out_name;
    return o;
  }
};

TEST(ExportTest, DecoderReloadsWithIdenticalLogitsAndTheAdapterRoundTrips) {
  FakeRun r;
  const ExportResult res = export_checkpoint(r.options());
  const fs::path out = r.tmp / "export";
  EXPECT_EQ(res.checkpoint, r.ckpt);
  EXPECT_EQ(res.step, 200);
  EXPECT_EQ(res.stage, "1");
  EXPECT_TRUE(res.has_adapter);
  for (const char* f :
       {"config.json", "model.safetensors", "tokenizer.json", "adapter.safetensors",
        "adapter_config.json", "speech_encoder.json", "config.resolved.yaml", "salad.json"}) {
    EXPECT_TRUE(fs::is_regular_file(out / f)) << f;
  }

  // The decoder: HF names only, fp32, tied head (no lm_head.weight), logits bit-identical.
  const auto model = safetensors::Checkpoint::open(out / "model.safetensors");
  EXPECT_TRUE(model.contains("model.embed_tokens.weight"));
  EXPECT_TRUE(model.contains("model.layers.1.self_attn.q_proj.bias"));
  EXPECT_FALSE(model.contains("lm_head.weight"));
  for (const auto& n : model.names()) EXPECT_EQ(n.rfind("adapter.", 0), std::string::npos) << n;
  EXPECT_EQ(model.info("model.norm.weight").dtype, "F32");
  EXPECT_EQ(model.metadata().at("format"), "pt");
  const auto cj = read_json(out / "config.json");
  EXPECT_EQ(cj["vocab_size"], 50);
  EXPECT_EQ(cj["hidden_size"], 32);
  EXPECT_EQ(cj["tie_word_embeddings"], true);
  EXPECT_EQ(cj["torch_dtype"], "float32");
  torch::NoGradGuard no_grad;
  models::Qwen2 loaded = models::load_qwen2(out, torch::kFloat);
  r.f.student->eval();
  const at::Tensor expected = r.f.student->forward({ids()});
  const at::Tensor got = loaded->forward({ids()});
  EXPECT_TRUE(torch::equal(got, expected)) << test::all_close(got, expected, 0.0, "logits");

  // The adapter: names kept, same tensors, same outputs from the exported config.
  const auto adapter_file = safetensors::Checkpoint::open(out / "adapter.safetensors");
  const auto original = models::named_tensors(*r.f.lm.adapter(), "adapter.");
  EXPECT_EQ(adapter_file.names().size(), original.size());
  for (const auto& [name, t] : original) {
    ASSERT_TRUE(adapter_file.contains(name)) << name;
    EXPECT_TRUE(torch::equal(adapter_file.get(name), t)) << name;
  }
  const models::AdapterOptions ao = read_adapter_config(out / "adapter_config.json");
  EXPECT_EQ(ao.input_dim, fx::kFeat);
  EXPECT_EQ(ao.output_dim, 32);
  EXPECT_EQ(ao.hidden_size, fx::tiny_adapter().hidden_size);
  EXPECT_EQ(ao.parameter_count(), res.adapter_parameters);
  models::Adapter adapter = load_exported_adapter(out);
  r.f.lm.adapter()->eval();
  torch::manual_seed(3);
  const at::Tensor feats = torch::randn({2, 5, fx::kFeat});
  const at::Tensor lengths = torch::tensor({5, 3});
  EXPECT_TRUE(
      torch::equal(adapter->forward(feats, lengths), r.f.lm.adapter()->forward(feats, lengths)));

  // The encoder the adapter expects, the tokenizer, the provenance.
  const auto enc = read_json(out / "speech_encoder.json");
  EXPECT_EQ(enc["type"], "fbank");
  EXPECT_EQ(enc["feature_dim"], fx::kFeat);
  EXPECT_EQ(enc["n_mels"], 1);
  EXPECT_DOUBLE_EQ(enc["frame_rate"].get<double>(), 12.5);
  EXPECT_EQ(enc["sample_rate"], 24000);
  EXPECT_EQ(test::read_text(out / "tokenizer.json"), test::read_text(r.tokenizer));
  const auto prov = read_json(out / "salad.json");
  EXPECT_EQ(prov["step"], 200);
  EXPECT_EQ(prov["stage"], "1");
  EXPECT_EQ(prov["run_dir"], r.run.string());
  EXPECT_EQ(prov["checkpoint"], r.ckpt.string());
  EXPECT_FALSE(prov["salad_version"].get<std::string>().empty());
  EXPECT_EQ(config::load(out / "config.resolved.yaml").model.arch.hidden_size, 32);
  // Nothing but the export is left beside it (the temp folder was renamed).
  int entries = 0;
  for (const auto& e : fs::directory_iterator(r.tmp.path())) {
    EXPECT_EQ(e.path().filename().string().find(".tmp-"), std::string::npos) << e.path();
    ++entries;
  }
  EXPECT_EQ(entries, 3);  // run, assets, export
}

TEST(ExportTest, PicksTheStepAskedForAndBf16HalvesTheSize) {
  FakeRun r;
  // An older checkpoint with other weights; `latest` stays on step 200.
  models::Qwen2 older = fx::random_decoder(99);
  models::SpeechLM lm_old(older, models::Adapter(fx::tiny_adapter()));
  write_checkpoint(r.run, 100, lm_old.state(), r.cfg);
  test::write_text(r.run / "checkpoints" / "latest", "step-000200\n");

  ExportOptions o = r.options("step100");
  o.step = 100;
  EXPECT_EQ(export_checkpoint(o).step, 100);
  torch::NoGradGuard no_grad;
  models::Qwen2 loaded = models::load_qwen2(r.tmp / "step100", torch::kFloat);
  EXPECT_TRUE(torch::equal(loaded->forward({ids()}), older->forward({ids()})));
  EXPECT_EQ(read_json(r.tmp / "step100" / "salad.json")["step"], 100);

  const fs::path fp32 = r.tmp / "fp32", bf16 = r.tmp / "bf16";
  export_checkpoint(r.options("fp32"));
  ExportOptions b = r.options("bf16");
  b.dtype = "bf16";
  export_checkpoint(b);
  for (const char* f : {"model.safetensors", "adapter.safetensors"}) {
    const double ratio =
        static_cast<double>(fs::file_size(bf16 / f)) / static_cast<double>(fs::file_size(fp32 / f));
    EXPECT_GT(ratio, 0.45) << f;
    EXPECT_LT(ratio, 0.56) << f;  // half the data; the JSON header is the same size
  }
  EXPECT_EQ(
      safetensors::Checkpoint::open(bf16 / "model.safetensors").info("model.norm.weight").dtype,
      "BF16");
  EXPECT_EQ(read_json(bf16 / "config.json")["torch_dtype"], "bfloat16");
  EXPECT_EQ(read_json(bf16 / "salad.json")["dtype"], "bf16");
  models::Qwen2 lb = models::load_qwen2(bf16, torch::kFloat);
  EXPECT_TRUE(torch::equal(
      lb->model->embed_tokens->weight,
      r.f.student->model->embed_tokens->weight.to(torch::kBFloat16).to(torch::kFloat)));
  EXPECT_EQ(load_exported_adapter(bf16, torch::kBFloat16)->out_proj->weight.scalar_type(),
            torch::kBFloat16);
}

TEST(ExportTest, UntiedDecoderFromAHuggingFaceFolderKeepsItsConfig) {
  TempDir tmp;
  const fs::path llm = test::data_dir() / "qwen2" / "qwen2_tiny_untied";
  models::Qwen2 student = models::load_qwen2(llm, torch::kFloat);
  randomize(*student, 11);  // a trained student differs from the original
  const fs::path spm = tmp / "tok" / "spm.model";
  test::write_text(spm, std::string("\n\x05"
                                    "fake"
                                    "\0"
                                    "sp",
                                    10));
  config::SaladConfig cfg;
  cfg.run.dir = tmp / "run";
  cfg.run.stage = "text";  // the decoder alone trains: no adapter tensors
  cfg.model.llm = llm;
  cfg.model.tokenizer = spm;
  write_checkpoint(cfg.run.dir, 40, models::named_tensors(*student), cfg);

  ExportOptions o;
  o.checkpoint = cfg.run.dir / "checkpoints" / "step-000040";
  o.out = tmp / "hf";
  const ExportResult res = export_checkpoint(o);
  EXPECT_FALSE(res.has_adapter);
  EXPECT_EQ(res.stage, "text");
  EXPECT_FALSE(fs::exists(o.out / "adapter.safetensors"));
  EXPECT_FALSE(fs::exists(o.out / "adapter_config.json"));
  EXPECT_FALSE(fs::exists(o.out / "speech_encoder.json"));
  EXPECT_FALSE(fs::exists(o.out / "tokenizer.json"));
  EXPECT_EQ(test::read_text(o.out / "spm.model"), test::read_text(spm));
  const auto cj = read_json(o.out / "config.json");
  EXPECT_EQ(cj["tie_word_embeddings"], false);
  EXPECT_EQ(cj["vocab_size"], 352);
  EXPECT_EQ(cj["bos_token_id"], 340);
  EXPECT_EQ(cj["eos_token_id"], 341);
  EXPECT_TRUE(safetensors::Checkpoint::open(o.out).contains("lm_head.weight"));
  EXPECT_EQ(read_json(o.out / "salad.json")["run_dir"], cfg.run.dir.string());
  torch::NoGradGuard no_grad;
  const at::Tensor in = torch::tensor({{3, 100, 351, 0, 17}});
  EXPECT_TRUE(torch::equal(models::load_qwen2(o.out, torch::kFloat)->forward({in}),
                           student->forward({in})));
}

TEST(ExportTest, ErrorsNameTheFileTensorAndShape) {
  FakeRun r;
  const fs::path weights = r.ckpt / "model.safetensors";

  // A tensor missing from the checkpoint.
  write_checkpoint(r.run, 200, without(r.f.lm.state(), "model.layers.1.mlp.up_proj.weight"), r.cfg);
  expect_error<CheckpointError>(
      [&] { export_checkpoint(r.options()); },
      {weights.string(), "missing: model.layers.1.mlp.up_proj.weight", "(expected [48, 32])"});
  write_checkpoint(r.run, 200, without(r.f.lm.state(), "adapter.in_proj.weight"), r.cfg);
  expect_error<CheckpointError>([&] { export_checkpoint(r.options()); },
                                {weights.string(), "adapter.in_proj.weight"});

  // Shapes that disagree with the config: the vocabulary, an adapter width, the encoder width.
  auto with = [&](auto edit) {
    config::SaladConfig c = r.cfg;
    edit(c);
    write_checkpoint(r.run, 200, r.f.lm.state(), c);
  };
  with([](config::SaladConfig& c) { c.model.arch.vocab_size = 60; });
  expect_error<CheckpointError>([&] { export_checkpoint(r.options()); },
                                {weights.string(), "model.embed_tokens.weight",
                                 "model.arch.vocab_size is 60", "[60, 32]", "found [50, 32]"});
  with([](config::SaladConfig& c) { c.adapter.intermediate_size = 40; });
  expect_error<CheckpointError>([&] { export_checkpoint(r.options()); },
                                {"cannot load the adapter from", weights.string(),
                                 "shape mismatch: adapter.layers.0.mlp.gate_proj.weight: expected "
                                 "[40, 16], found [24, 16]"});
  with([](config::SaladConfig& c) { c.encoder.n_mels = 4; });
  expect_error<CheckpointError>([&] { export_checkpoint(r.options()); },
                                {"the adapter reads 8-d features", "gives 32"});
  with([](config::SaladConfig& c) { c.model.arch.num_key_value_heads = 4; });
  expect_error<CheckpointError>(
      [&] { export_checkpoint(r.options()); },
      {"cannot load the student decoder", "model.layers.0.self_attn.k_proj.weight", "[32, 32]",
       "[16, 32]", "model.arch of"});

  // An unreadable config.
  write_checkpoint(r.run, 200, r.f.lm.state(), r.cfg, "run: {dir: x}\nmodel: [oops\n");
  expect_error<ConfigError>([&] { export_checkpoint(r.options()); },
                            {(r.ckpt / "config.resolved.yaml").string()});
  write_checkpoint(r.run, 200, r.f.lm.state(), r.cfg);

  // A file changed after the save (the manifest records every size).
  test::write_text(r.ckpt / "trainer.json", "{}");
  expect_error<CheckpointError>([&] { export_checkpoint(r.options()); },
                                {(r.ckpt / "trainer.json").string(), "the manifest says"});
  write_checkpoint(r.run, 200, r.f.lm.state(), r.cfg);

  // Missing or incomplete checkpoints.
  ExportOptions o = r.options();
  o.step = 300;
  expect_error<CheckpointError>(
      [&] { export_checkpoint(o); },
      {"step-000300", "no checkpoint for step 300", "present: step-000200"});
  test::write_text(r.run / "checkpoints" / "latest", "step-000500\n");
  expect_error<CheckpointError>([&] { export_checkpoint(r.options()); },
                                {"latest names 'step-000500'", "present: step-000200"});
  fs::remove(r.run / "checkpoints" / "latest");
  expect_error<CheckpointError>([&] { export_checkpoint(r.options()); },
                                {(r.run / "checkpoints" / "latest").string(), "missing"});
  test::write_text(r.run / "checkpoints" / "latest", "step-000200\n");
  fs::rename(r.ckpt / "checkpoint.json", r.tmp / "manifest");
  expect_error<CheckpointError>([&] { export_checkpoint(r.options()); },
                                {r.ckpt.string(), "no checkpoint.json", "incomplete"});
  fs::rename(r.tmp / "manifest", r.ckpt / "checkpoint.json");
  ExportOptions nowhere = r.options();
  nowhere.run_dir = r.tmp / "no-such-run";
  expect_error<CheckpointError>([&] { export_checkpoint(nowhere); },
                                {"no-such-run", "no such run folder"});

  // A checkpoint folder copied out of its run: its files are checked, the manifest must exist.
  fs::copy(r.ckpt, r.tmp / "copied", fs::copy_options::recursive);
  fs::remove(r.tmp / "copied" / "checkpoint.json");
  ExportOptions copied;
  copied.checkpoint = r.tmp / "copied";
  copied.out = r.tmp / "from-copy";
  expect_error<CheckpointError>([&] { export_checkpoint(copied); },
                                {(r.tmp / "copied" / "checkpoint.json").string(), "incomplete"});
  test::write_text(r.tmp / "copied" / "checkpoint.json", "{\"step\": 200}\n");
  EXPECT_EQ(export_checkpoint(copied).step, 200);  // from the manifest: the name has none

  // A missing tokenizer is named with the key that set it.
  fs::rename(r.tokenizer, r.tmp / "moved.json");
  expect_error<IoError>([&] { export_checkpoint(r.options()); },
                        {r.tokenizer.string(), "model.tokenizer"});
  fs::rename(r.tmp / "moved.json", r.tokenizer);

  // --out not empty: refused without force, replaced with it, never the run itself.
  test::write_text(r.tmp / "export" / "notes.txt", "mine");
  expect_error<IoError>([&] { export_checkpoint(r.options()); },
                        {"export", "not empty", "notes.txt", "--force"});
  EXPECT_TRUE(fs::exists(r.tmp / "export" / "notes.txt"));
  ExportOptions forced = r.options();
  forced.force = true;
  export_checkpoint(forced);
  EXPECT_FALSE(fs::exists(r.tmp / "export" / "notes.txt"));
  EXPECT_TRUE(fs::exists(r.tmp / "export" / "model.safetensors"));
  forced.out = r.run;
  expect_error<IoError>([&] { export_checkpoint(forced); }, {"contains the checkpoint"});
  EXPECT_TRUE(fs::exists(r.ckpt / "model.safetensors"));

  // Bad options.
  ExportOptions both = r.options();
  both.checkpoint = r.ckpt;
  expect_error<ConfigError>([&] { export_checkpoint(both); }, {"exactly one"});
  ExportOptions dt = r.options();
  dt.dtype = "int8";
  expect_error<ConfigError>([&] { export_checkpoint(dt); }, {"int8"});

  // No failed export left a temp folder behind.
  for (const auto& e : fs::directory_iterator(r.tmp.path())) {
    EXPECT_EQ(e.path().filename().string().find(".tmp-"), std::string::npos) << e.path();
  }
}

// The trainer's real output (not a hand-made run folder) exports, and the decoder and adapter
// are the ones it trained.
TEST(ExportTest, ExportsWhatTheTrainerSaved) {
  TempDir tmp;
  config::SaladConfig cfg = test_util::tiny_config(tmp / "run", 4);
  const config::SaladConfig shapes = tiny_config(tmp / "run", "");
  cfg.model.arch = shapes.model.arch;
  cfg.encoder = shapes.encoder;
  cfg.adapter = shapes.adapter;
  TrainParts parts = test_util::tiny_parts();
  const std::shared_ptr<models::SpeechLM> lm = parts.lm;
  {
    Trainer t(cfg, std::move(parts), std::make_shared<dist::Comm>(dist::CommOptions{}));
    ASSERT_EQ(t.run(false).step, 4);
  }
  ExportOptions o;
  o.run_dir = tmp / "run";
  o.out = tmp / "hf";
  const ExportResult r = export_checkpoint(o);
  EXPECT_EQ(r.step, 4);
  ASSERT_TRUE(r.has_adapter);
  torch::NoGradGuard no_grad;
  lm->student()->eval();
  lm->adapter()->eval();
  const at::Tensor got = models::load_qwen2(o.out, torch::kFloat)->forward({ids()});
  const at::Tensor want = lm->student()->forward({ids()});
  EXPECT_TRUE(torch::equal(got, want)) << test::all_close(got, want, 0.0, "logits");
  EXPECT_FALSE(torch::equal(got, lm->teacher()->forward({ids()})));  // it did train
  torch::manual_seed(4);
  const at::Tensor feats = torch::randn({1, 6, fx::kFeat});
  const at::Tensor lengths = torch::tensor({6});
  EXPECT_TRUE(torch::equal(load_exported_adapter(o.out)->forward(feats, lengths),
                           lm->adapter()->forward(feats, lengths)));
}

TEST(ExportTest, AdapterConfigErrorsNameTheFileAndKeys) {
  TempDir tmp;
  test::write_text(tmp / "adapter_config.json",
                   "{\"format\": \"salad-adapter\", \"input_dim\": \"8\", \"hidden_size\": 16}");
  expect_error<ConfigError>(
      [&] { read_adapter_config(tmp / "adapter_config.json"); },
      {(tmp / "adapter_config.json").string(), "key 'input_dim': expected an integer, found \"8\"",
       "key 'num_layers': missing"});
  const models::AdapterOptions o = fx::tiny_adapter();
  test::write_text(tmp / "ok.json", adapter_config_json(o));
  const models::AdapterOptions back = read_adapter_config(tmp / "ok.json");
  EXPECT_EQ(back.input_dim, o.input_dim);
  EXPECT_EQ(back.num_kv_heads, o.num_kv_heads);
  EXPECT_EQ(back.intermediate_size, o.intermediate_size);
  EXPECT_DOUBLE_EQ(back.rope_theta, o.rope_theta);
  EXPECT_EQ(back.causal, o.causal);
}

TEST(ExportAppTest, ExportsThroughTheBinaryWithExitCodes) {
  FakeRun r;
  const fs::path out = r.tmp / "app-out";
  const auto ok =
      test::run(kExport + " --run " + r.run.string() + " --out " + out.string() + " --dtype bf16");
  ASSERT_EQ(ok.exit_code, 0) << ok.output;
  EXPECT_NE(ok.output.find("step 200"), std::string::npos) << ok.output;
  EXPECT_NE(ok.output.find((out / "config.json").string()), std::string::npos) << ok.output;
  EXPECT_EQ(read_json(out / "config.json")["torch_dtype"], "bfloat16");

  const auto again =
      test::run(kExport + " --checkpoint " + r.ckpt.string() + " --out " + out.string());
  EXPECT_EQ(again.exit_code, kExitIo) << again.output;
  EXPECT_NE(again.output.find("not empty"), std::string::npos) << again.output;
  const auto forced = test::run(kExport + " --checkpoint " + r.ckpt.string() + " --out " +
                                out.string() + " --force");
  EXPECT_EQ(forced.exit_code, 0) << forced.output;
  EXPECT_EQ(read_json(out / "config.json")["torch_dtype"], "float32");

  const auto missing = test::run(kExport + " --run " + (r.tmp / "nope").string() + " --out " +
                                 (r.tmp / "o2").string());
  EXPECT_EQ(missing.exit_code, kExitCheckpoint) << missing.output;
  EXPECT_EQ(test::run(kExport + " --out " + (r.tmp / "o3").string()).exit_code, kExitUsage);
  EXPECT_EQ(test::run(kExport + " --run " + r.run.string()).exit_code, kExitUsage);
  EXPECT_EQ(test::run(kExport + " --run " + r.run.string() + " --out x --dtype int4").exit_code,
            kExitUsage);
}

// scripts/plot_run.py on a synthetic metrics.jsonl.
TEST(ExportPlotTest, PlotRunWritesValidPngsAndSkipsMalformedLines) {
  // plot_run.py falls back to the system python3 (Debian's python3-matplotlib) when the first
  // python3 in PATH lacks matplotlib.
  if (test::run("(python3 -c 'import matplotlib' || /usr/bin/python3 -c 'import matplotlib')")
          .exit_code != 0) {
    GTEST_SKIP() << "python3 with matplotlib is not installed (apt-get install python3-matplotlib)";
  }
  TempDir tmp;
  std::string lines;
  for (int step = 10; step <= 200; step += 10) {
    char buf[512];
    std::snprintf(buf, sizeof buf,
                  "{\"step\":%d,\"time_s\":%d.5,\"loss\":%.3f,\"kl\":%.3f,\"nll\":%.3f,"
                  "\"lr_adapter\":%.6f,\"lr_llm\":%.7f,\"grad_norm\":%.2f,\"tokens\":%d,"
                  "\"tokens_per_s\":%.1f,\"data_wait\":%.3f%s}\n",
                  step, step, 3.0 / step * 10, 2.0 / step * 10, 1.0 / step * 10 + 2,
                  1e-3 * std::min(1.0, step / 50.0), 5e-5 * std::min(1.0, step / 50.0),
                  1.0 + 10.0 / step, step * 8192, 1000.0 + step, 0.01 * (step % 30),
                  step > 100 ? ",\"mfu\":0.31" : "");
    lines += buf;
    if (step == 60) lines += "{\"step\": 60, \"loss\": \n";  // a torn line (a crash mid-write)
    if (step % 50 == 0) {
      std::snprintf(buf, sizeof buf,
                    "{\"step\":%d,\"split\":\"valid\",\"loss\":%.3f,\"misalignment\":%.3f,"
                    "\"forgetting\":%.4f,\"distillation\":%.3f,\"nll\":%.3f}\n",
                    step, 2.0 - step / 200.0, 0.5 - step / 1000.0, 0.01 + step / 1e4,
                    1.0 - step / 400.0, 2.5);
      lines += buf;
    }
  }
  lines += "not json at all\n";
  test::write_text(tmp / "run" / "metrics.jsonl", lines);
  const std::string script = std::string(SALAD_SOURCE_DIR) + "/scripts/plot_run.py";
  const auto r = test::run("python3 " + script + " " + (tmp / "run").string() + " --out " +
                           (tmp / "plots").string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  // Line numbers: the torn line follows step 60's line and the step-50 validation line; the
  // garbage line is the last of 20 training, 4 validation and 2 bad lines.
  EXPECT_NE(r.output.find("metrics.jsonl:8: skipping"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("metrics.jsonl:26: skipping"), std::string::npos) << r.output;
  for (const char* f :
       {"loss.png", "lr.png", "grad_norm.png", "throughput.png", "data_wait.png", "valid.png"}) {
    const fs::path p = tmp / "plots" / f;
    ASSERT_TRUE(fs::is_regular_file(p)) << p << "\n" << r.output;
    const std::string bytes = test::read_text(p);
    ASSERT_GT(bytes.size(), 1000u) << p;
    EXPECT_EQ(bytes.substr(0, 8), std::string("\x89PNG\r\n\x1a\n", 8)) << p;
    EXPECT_NE(r.output.find(p.string()), std::string::npos) << "not listed: " << p;
  }
  // Default output folder: <run>/plots; a missing metrics file is an error.
  const auto d = test::run("python3 " + script + " " + (tmp / "run").string());
  EXPECT_EQ(d.exit_code, 0) << d.output;
  EXPECT_TRUE(fs::is_regular_file(tmp / "run" / "plots" / "loss.png"));
  const auto missing = test::run("python3 " + script + " " + (tmp / "nothing").string());
  EXPECT_NE(missing.exit_code, 0);
  EXPECT_NE(missing.output.find("metrics.jsonl"), std::string::npos) << missing.output;
}

}  // namespace
}  // namespace salad::train
