// adapter_config.json of an exported adapter (written by salad-export, read back by
// load_exported_adapter): every AdapterOptions field under its name.
#include <torch/torch.h>
#include <nlohmann/json.hpp>

#include <string>
#include <vector>

#include "salad/core/error.h"
#include "salad/core/safetensors.h"
#include "salad/models/weight_loader.h"
#include "salad/train/export.h"
#include "train/export_internal.h"

namespace salad::train {

namespace {

using json = nlohmann::ordered_json;

int64_t json_int(const json& j, const char* key, std::vector<std::string>& errors) {
  if (!j.contains(key)) {
    errors.push_back(std::string("key '") + key + "': missing (an integer)");
  } else if (!j[key].is_number_integer()) {
    errors.push_back(std::string("key '") + key + "': expected an integer, found " + j[key].dump());
  } else {
    return j[key].get<int64_t>();
  }
  return 0;
}

double json_num(const json& j, const char* key, std::vector<std::string>& errors) {
  if (!j.contains(key)) {
    errors.push_back(std::string("key '") + key + "': missing (a number)");
  } else if (!j[key].is_number()) {
    errors.push_back(std::string("key '") + key + "': expected a number, found " + j[key].dump());
  } else {
    return j[key].get<double>();
  }
  return 0.0;
}

bool json_bool(const json& j, const char* key, std::vector<std::string>& errors) {
  if (!j.contains(key)) {
    errors.push_back(std::string("key '") + key + "': missing (true or false)");
  } else if (!j[key].is_boolean()) {
    errors.push_back(std::string("key '") + key + "': expected true or false, found " +
                     j[key].dump());
  } else {
    return j[key].get<bool>();
  }
  return false;
}

}  // namespace

std::string adapter_config_json(const models::AdapterOptions& o) {
  json j;
  j["format"] = "salad-adapter";
  j["version"] = 1;
  j["input_dim"] = o.input_dim;
  j["codes"] = o.codes;
  j["codebook_size"] = o.codebook_size;
  j["hidden_size"] = o.hidden_size;
  j["num_layers"] = o.num_layers;
  j["num_heads"] = o.num_heads;
  j["num_kv_heads"] = o.num_kv_heads;
  j["intermediate_size"] = o.intermediate_size;
  j["rope_theta"] = o.rope_theta;
  j["rms_norm_eps"] = o.rms_norm_eps;
  j["causal"] = o.causal;
  j["init_std"] = o.init_std;
  j["output_dim"] = o.output_dim;
  j["parameters"] = o.parameter_count();
  return j.dump(2) + "\n";
}

models::AdapterOptions read_adapter_config(const fs::path& path) {
  json j;
  try {
    j = json::parse(detail::read_bytes(path));
  } catch (const json::parse_error& ex) {
    throw ConfigError(path.string() + ": not valid JSON: " + ex.what());
  } catch (const IoError& ex) {
    throw ConfigError(std::string(ex.what()) + " (the adapter config)");
  }
  if (!j.is_object()) throw ConfigError(path.string() + ": expected a JSON object");
  std::vector<std::string> e;
  if (j.value("format", std::string()) != "salad-adapter") {
    e.push_back("key 'format': expected \"salad-adapter\", found " +
                (j.contains("format") ? j["format"].dump() : std::string("nothing")));
  }
  models::AdapterOptions o;
  o.input_dim = json_int(j, "input_dim", e);
  o.codes = json_bool(j, "codes", e);
  o.codebook_size = json_int(j, "codebook_size", e);
  o.hidden_size = json_int(j, "hidden_size", e);
  o.num_layers = json_int(j, "num_layers", e);
  o.num_heads = json_int(j, "num_heads", e);
  o.num_kv_heads = json_int(j, "num_kv_heads", e);
  o.intermediate_size = json_int(j, "intermediate_size", e);
  o.rope_theta = json_num(j, "rope_theta", e);
  o.rms_norm_eps = json_num(j, "rms_norm_eps", e);
  o.causal = json_bool(j, "causal", e);
  o.init_std = json_num(j, "init_std", e);
  o.output_dim = json_int(j, "output_dim", e);
  if (!e.empty()) {
    std::string msg = path.string() + ": invalid adapter config:";
    for (const auto& s : e) msg += "\n  " + s;
    throw ConfigError(msg);
  }
  try {
    o.validate();
  } catch (const ConfigError& ex) {
    throw ConfigError(path.string() + ": " + ex.what());
  }
  return o;
}

models::Adapter load_exported_adapter(const fs::path& dir, c10::ScalarType dtype) {
  const models::AdapterOptions o = read_adapter_config(dir / "adapter_config.json");
  const auto ckpt = safetensors::Checkpoint::open(dir / "adapter.safetensors");
  models::Adapter adapter(o);
  adapter->to(dtype);
  auto lo = detail::adapter_load_options();
  lo.hint = "adapter config " + (dir / "adapter_config.json").string();
  models::load_weights(*adapter, ckpt, lo);
  adapter->eval();
  return adapter;
}

}  // namespace salad::train
