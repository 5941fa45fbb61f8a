// The search's final phase: the few best distinct architectures train on, in parallel, for the
// time the search kept for its end (final.h). Why it pays, in napkin math: a CPU child trains
// 1,000 steps of 50 images (~1 epoch of Fashion-MNIST) before it is judged, so the population's
// best has seen a handful of epochs along its lineage; the same net trained on for ~9 minutes
// sees ~10-40 more at 1-5k images/s per core, and with the rate annealed to ~0 at the end it
// gains 1-3 points of test accuracy that no amount of further search at 1,000 steps can give
// (bench/results/cpu_search.md measures it). Not the search loop (search.cpp).
#include "final.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <thread>

#include "evo/backend.h"
#include "evo/dna.h"
#include "evo/io.h"
#include "evo/population.h"

namespace evo::detail {

Dna widen(const Dna& dna, double k) {
  // Skips are identity edges (validate()) and a vertex's channels are its backbone in-edge's
  // (dna_compile.cpp), so the backbone up to its first conv holds the image's channels: an
  // identity edge before that conv (searches grow them) passes the image on unchanged. That conv
  // sets the width every later layer's factor is a ratio of.
  std::map<std::string, const Edge*> backbone_out;
  for (const Edge& e : dna.edges)
    if (!e.skip) backbone_out[e.from] = &e;
  Dna wide = dna;
  std::set<std::string> seen;
  for (std::string at = dna.input; seen.insert(at).second;) {
    const auto it = backbone_out.find(at);
    if (it == backbone_out.end()) break;  // no conv on the backbone: nothing to widen
    if (it->second->type == EdgeType::Conv) {
      for (Edge& e : wide.edges)
        if (e.id == it->second->id) e.depth_factor *= k;
      break;
    }
    at = it->second->to;
  }
  return wide;
}

WidthChoice choose_width(const Dna& dna, const DeviceDataset& dev, Context& ctx, int batch,
                         int augment, double epochs, double seconds, int64_t max_params,
                         double max_flops, const std::atomic<bool>& stop) {
  WidthChoice choice;
  const auto t0 = std::chrono::steady_clock::now();
  auto elapsed = [&] {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  };
  // The distinct widths: one that compiles to the net of a narrower one (channel counts round;
  // a DNA whose image feeds no convolution does not widen at all) is that one; the first over a
  // size limit ends the list (wider ones are larger still).
  struct Rung {
    double width, train_flops;
  };
  std::vector<Rung> rungs;
  int64_t last_params = -1;
  for (double w : kFinalWidths) {
    CompiledDna plan;
    try {
      plan = compile(widen(dna, w), dev.h, dev.w, dev.c, dev.classes);
    } catch (const DnaError&) {
      break;  // past kMaxChannels (or kMaxDepthFactor): wider ones are too
    }
    if (plan.param_count == last_params) continue;
    if (!rungs.empty() && ((max_params > 0 && plan.param_count > max_params) ||
                           (max_flops > 0 && plan.forward_flops > max_flops)))
      break;
    last_params = plan.param_count;
    rungs.push_back({w, plan.train_flops});
  }
  if (rungs.size() < 2 || dev.train.n <= 0) return choice;

  // Seconds per step at rung i: ~1 s of training from fresh weights, after two steps that
  // reach the steady state (the first allocates). The rate is small (it learns nothing worth
  // keeping, and a probe that diverges early would measure too few steps).
  constexpr double kProbeSeconds = 1.0;
  std::map<std::size_t, double> measured;
  auto probe = [&](std::size_t i) {
    const CompiledDna plan =
        compile(widen(dna, rungs[i].width), dev.h, dev.w, dev.c, dev.classes);
    Weights weights = init_weights(plan, ctx);
    Model model(plan, batch, ctx);
    model.bind(weights);
    TrainOptions t;
    t.batch = batch;
    t.set_augment(augment == 2);
    t.flip = augment >= 1;
    t.stop = &stop;
    t.steps = 2;
    (void)train_model(model, dev, ctx, t, 1e-4f);
    t.steps = 100000000;
    t.time_budget = kProbeSeconds;
    const TrainResult r = train_model(model, dev, ctx, t, 1e-4f);
    const double per_step = r.steps_done > 0 ? r.seconds / r.steps_done : INFINITY;
    measured[i] = per_step;
    choice.probed.emplace_back(rungs[i].width, per_step);
  };
  // Passes over the training set in the time left after the probes so far, at `per_step`.
  auto epochs_at = [&](double per_step) {
    return (seconds - elapsed()) / per_step * double(batch) / double(dev.train.n);
  };
  // Start at 2x (the fixed default this replaces), then at the widest width the last probe's
  // FLOP ratios predict to fit. Going wider, FLOPs overstate the cost (a step's fixed cost does
  // not grow), going narrower they understate it; either way the next probe measures.
  std::size_t i = 0;
  while (i + 1 < rungs.size() && rungs[i].width < 2) ++i;
  for (int k = 0; k < 4 && !stop.load(); ++k) {
    probe(i);
    std::size_t next = 0;
    for (std::size_t j = rungs.size(); j-- > 1;) {
      const auto it = measured.find(j);
      const double per_step = it != measured.end()
                                  ? it->second
                                  : measured[i] * rungs[j].train_flops / rungs[i].train_flops;
      if (epochs_at(per_step) >= epochs) {
        next = j;
        break;
      }
    }
    if (next == 0 || measured.count(next)) break;
    i = next;
  }
  // The widest measured width that fits; width 1 (from the search's weights) when none does.
  for (auto it = measured.rbegin(); it != measured.rend(); ++it)
    if (it->first > 0 && epochs_at(it->second) >= epochs) {
      choice.width = rungs[it->first].width;
      choice.step_seconds = it->second;
      break;
    }
  choice.probe_seconds = elapsed();
  return choice;
}

std::vector<std::string> distinct_best(const Population& pop, int top) {
  std::vector<IndividualRecord> alive;
  for (const std::string& id : pop.alive_ids()) {
    std::optional<IndividualRecord> r;
    try {
      r = pop.read(id);
    } catch (const Error&) {
      continue;  // a damaged record: not a candidate (the next search start quarantines it)
    }
    if (r && r->alive() && !r->failed && std::isfinite(r->fitness)) alive.push_back(std::move(*r));
  }
  // By fitness, the earlier birth first among equals (a clone is born after its original).
  std::stable_sort(alive.begin(), alive.end(), [](const auto& a, const auto& b) {
    return a.fitness != b.fitness ? a.fitness > b.fitness : a.birth_time < b.birth_time;
  });
  std::vector<std::string> ids;
  std::set<std::string> seen;
  for (const IndividualRecord& r : alive) {
    if (int(ids.size()) >= top) break;
    try {
      Dna dna = load_dna(pop.dna_path(r.id));
      dna.learning_rate = 0;  // the architecture alone
      if (seen.insert(to_json(dna)).second) ids.push_back(r.id);
    } catch (const Error&) {
      // Killed by another process since the listing, or damaged: the next one stands in.
    }
  }
  return ids;
}

namespace {

nlohmann::json to_json(const FinalModel& m) {
  auto num = [](double v) { return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(); };
  // The keys `evo retrain` writes, so that `evo report` shows either.
  return {{"id", m.id},           {"folder", m.folder},        {"parameters", m.params},
          {"width", m.width},     {"epochs", m.epochs},
          {"search_val_accuracy", num(m.search_val)},           {"val_after", num(m.val)},
          {"test_after", num(m.test)},                          {"steps", m.steps},
          {"seconds", m.seconds}, {"failed", m.failed},        {"failure", m.failure},
          {"restarts", m.retries}};
}

}  // namespace

FinalPhase run_final_phase(const Population& pop, const std::vector<std::string>& ids,
                           const std::vector<Device>& devices,
                           const std::map<std::string, std::unique_ptr<DeviceDataset>>& data,
                           const Dataset& host_data, const SearchOptions& opts, double seconds,
                           const std::atomic<bool>& stop,
                           const std::function<void(const FinalModel&)>& done) {
  FinalPhase phase;
  const auto t0 = std::chrono::steady_clock::now();
  const std::size_t n = std::min(ids.size(), devices.size());
  phase.models.resize(n);
  // Each model's softmax on the test and the validation set, for the ensemble.
  std::vector<std::vector<float>> probabilities(n), val_probabilities(n);
  const std::string final_dir = (std::filesystem::path(pop.dir()) / "final").string();
  std::filesystem::create_directories(final_dir);
  std::mutex mutex;  // done() one call at a time

  auto train_one = [&](std::size_t i) {
    FinalModel& m = phase.models[i];
    m.id = ids[i];
    m.folder = std::to_string(i + 1) + "-" + ids[i];
    const Device device = devices[i];
    try {
      if (device.is_cpu()) set_cpu_threads(opts.threads_per_worker);
      const DeviceDataset& dev = *data.at(device.str());
      Context ctx(device, opts.seed * 1000003u + i + 1, uint32_t(i));
      if (const auto rec = pop.read(m.id)) m.search_val = rec->fitness;
      const Dna source = load_dna(pop.dna_path(m.id));
      const auto deadline = t0 + std::chrono::duration<double>(seconds);
      WidthChoice choice;
      if (opts.final_width > 0) {
        choice.width = opts.final_width;
      } else {
        const double left =
            std::chrono::duration<double>(deadline - std::chrono::steady_clock::now()).count();
        choice = choose_width(source, dev, ctx, opts.batch, opts.final_augment, opts.final_epochs,
                              left, opts.max_params, opts.max_flops, stop);
      }
      // A width that changes no channel count (no conv reads the image's channels, or they
      // round to the same) is width 1: the net trains on from its weights, not from fresh ones.
      const CompiledDna narrow = compile(source, dev.h, dev.w, dev.c, dev.classes);
      Dna dna = widen(source, choice.width);
      CompiledDna plan = compile(dna, dev.h, dev.w, dev.c, dev.classes);
      if (plan.param_count == narrow.param_count) {
        choice.width = 1;
        dna = source;
        plan = narrow;
      }
      m.width = choice.width;
      const bool widened = m.width != 1;
      m.params = plan.param_count;
      // A loss that turns NaN (fresh weights at an evolved rate can diverge) is not the end of
      // the phase: the net starts again from fresh weights at a fifth of the rate, in the time
      // left, up to kTries times; the result says so.
      constexpr int kTries = 3;
      double rate = dna.learning_rate;
      Weights weights;
      for (int attempt = 0; attempt < kTries; ++attempt) {
        const double left =
            std::chrono::duration<double>(deadline - std::chrono::steady_clock::now()).count();
        if (attempt > 0 && left < 1) break;
        weights = widened || attempt > 0 ? init_weights(plan, ctx)
                                         : load_weights(pop.weights_path(m.id), plan, device);
        TrainOptions topts;
        topts.steps = 100000000;  // the clock ends it
        topts.time_budget = left;
        topts.schedule = LrSchedule::Cosine;
        topts.warmup = widened || attempt > 0 ? 0.02 : 0;  // fresh weights warm up
        topts.batch = opts.batch;
        topts.set_augment(opts.final_augment == 2);
        topts.flip = opts.final_augment >= 1;
        topts.stop = &stop;
        // The claim on the final phase stays fresh for the other machines of the run
        // (Population::claim_final); a claim that is gone changes nothing here.
        topts.on_progress = [&pop](int, double, double) { (void)pop.heartbeat_final(); };
        Model model(plan, opts.batch, ctx);
        model.bind(weights);
        const TrainResult tr = train_model(model, dev, ctx, topts, float(rate));
        m.steps += tr.steps_done;
        m.seconds += tr.seconds;
        m.failed = tr.failed;
        m.failure = tr.failure;
        if (!tr.failed) break;
        m.retries.push_back(tr.failure);
        rate /= 5;
      }
      m.learning_rate = rate;
      m.epochs = double(m.steps) * opts.batch / std::max(1, dev.train.n);
      if (!m.failed) {
        Model eval_model(plan, kEvalBatch, ctx);
        eval_model.bind(weights);
        EvalResult val = evaluate_model(eval_model, dev, "val", ctx, true);
        m.val = val.accuracy();
        val_probabilities[i] = std::move(val.probabilities);
        EvalResult test = evaluate_model(eval_model, dev, "test", ctx, true);
        m.test = test.accuracy();
        probabilities[i] = std::move(test.probabilities);
        const std::string dir = final_dir + "/" + m.folder;
        std::filesystem::create_directories(dir);
        save_weights(weights, dir + "/weights.evow");
        write_file_atomic(dir + "/dna.json", evo::to_json(dna), "DNA file");
        nlohmann::json metrics = to_json(m);
        metrics["learning_rate"] = m.learning_rate;
        metrics["dna_learning_rate"] = dna.learning_rate;
        metrics["restarts"] = m.retries;
        metrics["lr_schedule"] = "cosine";
        metrics["width"] = m.width;
        if (opts.final_width <= 0) {
          nlohmann::json probes = nlohmann::json::array();
          for (const auto& [w, per_step] : choice.probed)
            probes.push_back({{"width", w}, {"seconds_per_step", per_step}});
          metrics["width_rule"] = {{"epochs", opts.final_epochs},
                                   {"probes", probes},
                                   {"probe_seconds", choice.probe_seconds}};
        }
        metrics["from"] = widened ? "scratch" : "weights";
        metrics["device"] = device.str();
        write_file_atomic(dir + "/metrics.json", metrics.dump(2) + "\n", "metrics");
      }
    } catch (const std::exception& e) {
      // Killed by another process meanwhile, out of memory, a file fault: this model fails, the
      // others go on.
      m.failed = true;
      m.failure = e.what();
    }
    std::lock_guard<std::mutex> lock(mutex);
    if (done) done(m);
  };
  std::vector<std::thread> threads;
  for (std::size_t i = 0; i < n; ++i) threads.emplace_back(train_one, i);
  for (std::thread& t : threads) t.join();

  std::vector<double> summed, summed_val;
  int members = 0;  // the models that trained: the ensemble's size
  auto add = [](std::vector<double>& sum, const std::vector<float>& p) {
    if (sum.empty()) sum.assign(p.size(), 0.0);
    for (std::size_t j = 0; j < sum.size() && j < p.size(); ++j) sum[j] += p[j];
  };
  for (std::size_t i = 0; i < n; ++i) {
    const FinalModel& m = phase.models[i];
    if (m.failed || probabilities[i].empty()) continue;
    ++members;
    if (phase.chosen < 0 || m.val > phase.models[std::size_t(phase.chosen)].val)
      phase.chosen = int(i);
    add(summed, probabilities[i]);
    add(summed_val, val_probabilities[i]);
  }
  phase.ensemble_size = members;
  phase.ensemble_test = ensemble_accuracy(summed, host_data.test.labels, host_data.classes);
  phase.ensemble_val = ensemble_accuracy(summed_val, host_data.val.labels, host_data.classes);
  phase.ensemble_answer =
      phase.chosen >= 0 && ensemble_is_answer(members, phase.ensemble_val,
                                              phase.models[std::size_t(phase.chosen)].val);
  phase.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  auto num = [](double v) { return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(); };
  nlohmann::json summary = {{"run", pop.dir()},
                            {"phase", "search"},  // written by the search's final phase
                            {"top", n},
                            // (a net that the width leaves as it was trains on from its
                            // weights: each model's metrics say which)
                            {"from", opts.final_width != 1 ? "scratch when widened" : "weights"},
                            {"width", opts.final_width > 0 ? nlohmann::json(opts.final_width)
                                                           : nlohmann::json("auto")},
                            {"seconds_each", seconds},
                            {"steps", n ? phase.models[0].steps : 0},
                            {"batch", opts.batch},
                            {"augment", opts.final_augment == 2   ? "on"
                                        : opts.final_augment == 1 ? "flips"
                                                                  : "off"},
                            {"lr_decay", "cosine over the time"},
                            {"device", devices.empty() ? "" : devices[0].str()},
                            {"chosen", phase.chosen >= 0 ? nlohmann::json(phase.models[std::size_t(phase.chosen)].id) : nlohmann::json()},
                            {"ensemble_size", members},
                            {"ensemble_test", num(phase.ensemble_test)},
                            {"ensemble_val", num(phase.ensemble_val)},
                            // The run's answer (ensemble_is_answer): what evo export writes.
                            {"answer", phase.ensemble_answer ? "ensemble" : "final model"},
                            {"individuals", nlohmann::json::array()}};
  for (const FinalModel& m : phase.models) summary["individuals"].push_back(to_json(m));
  write_file_atomic(final_dir + "/retrain.json", summary.dump(2) + "\n", "final-phase summary");
  return phase;
}

void measure_final_phase(const std::string& run_dir, const Dataset& data,
                         const DeviceDataset& dev, Context& ctx, SearchSummary& s) {
  std::vector<FinalModel> models;
  FinalEnsemble ensemble;
  try {
    models = read_final_phase(run_dir, &ensemble);
  } catch (const Error& e) {
    s.damaged.push_back(e.what());
    return;
  }
  std::vector<double> summed;
  int measured = 0;
  for (const FinalModel& m : models) {
    if (m.failed) continue;
    const std::string dir = run_dir + "/final/" + m.folder;
    try {
      const CompiledDna plan =
          compile(load_dna(dir + "/dna.json"), dev.h, dev.w, dev.c, dev.classes);
      Weights w = load_weights(dir + "/weights.evow", plan, ctx.device());
      Model model(plan, kEvalBatch, ctx);
      model.bind(w);
      const EvalResult e = evaluate_model(model, dev, "test", ctx, true);
      // The phase's rule: the best validation accuracy, the first by rank on a tie.
      if (measured == 0 || m.val > s.final_val) {
        s.final_id = m.id;
        s.final_folder = "final/" + m.folder;
        s.final_val = m.val;
        s.final_test = e.accuracy();
      }
      if (summed.empty()) summed.assign(e.probabilities.size(), 0.0);
      for (std::size_t i = 0; i < summed.size(); ++i) summed[i] += e.probabilities[i];
      ++measured;
      s.final_seconds = std::max(s.final_seconds, m.seconds);
    } catch (const Error& e) {
      s.damaged.push_back(dir + ": " + e.what());
    }
  }
  if (measured == 0) return;
  s.final_models = measured;
  s.final_ensemble_test = ensemble_accuracy(summed, data.test.labels, data.classes);
  // The answer the phase chose, by the validation accuracies it measured on the run's own
  // validation images (a search may cap them: --max-val, which evo best does not know), as the
  // final model is; only the test accuracies are measured again. A member lost since leaves the
  // ensemble; with one left, it is the answer.
  s.final_ensemble_val = ensemble.val;
  const bool is_ensemble = ensemble.answer && measured >= 2;
  s.answer = is_ensemble ? "ensemble" : "final model";
  s.answer_test = is_ensemble ? s.final_ensemble_test : s.final_test;
}

}  // namespace evo::detail

namespace evo {

std::vector<FinalModel> read_final_phase(const std::string& run_dir, FinalEnsemble* ensemble) {
  const std::string path = run_dir + "/final/retrain.json";
  if (!std::filesystem::exists(path)) return {};
  const nlohmann::json j =
      parse_json_limited(read_file_limited(path, 1 << 20, "final-phase summary"), path);
  auto is = [](const nlohmann::json& o, const char* key,
               bool (nlohmann::json::*type)() const noexcept) {
    return o.is_object() && o.contains(key) && (o[key].*type)();
  };
  // `evo retrain` writes no "phase": its models are not the search's answer.
  if (!is(j, "phase", &nlohmann::json::is_string) || j["phase"] != "search") return {};
  if (!is(j, "individuals", &nlohmann::json::is_array))
    throw Error(path + ": no \"individuals\" list (a damaged final-phase summary; the run's "
                "search individuals are intact)");
  std::vector<FinalModel> models;
  for (const nlohmann::json& r : j["individuals"]) {
    FinalModel m;
    if (!is(r, "id", &nlohmann::json::is_string) || !is(r, "folder", &nlohmann::json::is_string))
      throw Error(path + ": an entry without an id and a folder: " + json_excerpt(r));
    m.id = r["id"];
    m.folder = r["folder"];
    if (m.folder.empty() || m.folder.find('/') != std::string::npos || m.folder == "." ||
        m.folder == "..")
      throw Error(path + ": folder " + quote_excerpt(m.folder) + " is not a name in final/");
    auto num = [&](const char* key) {
      return is(r, key, &nlohmann::json::is_number) ? r[key].get<double>() : NAN;
    };
    m.search_val = num("search_val_accuracy");
    m.val = num("val_after");
    m.test = num("test_after");
    const double seconds = num("seconds");
    m.seconds = std::isfinite(seconds) ? seconds : 0;
    if (is(r, "parameters", &nlohmann::json::is_number_integer)) m.params = r["parameters"];
    if (is(r, "steps", &nlohmann::json::is_number_integer)) m.steps = r["steps"];
    const double width = num("width"), epochs = num("epochs");
    m.width = std::isfinite(width) ? width : 1;
    m.epochs = std::isfinite(epochs) ? epochs : 0;
    m.failed = (is(r, "failed", &nlohmann::json::is_boolean) && r["failed"].get<bool>()) ||
               !std::isfinite(m.val);
    if (is(r, "failure", &nlohmann::json::is_string)) m.failure = r["failure"];
    models.push_back(std::move(m));
  }
  if (ensemble) {
    *ensemble = FinalEnsemble{};
    if (is(j, "ensemble_size", &nlohmann::json::is_number_integer))
      ensemble->size = j["ensemble_size"];
    if (is(j, "ensemble_val", &nlohmann::json::is_number)) ensemble->val = j["ensemble_val"];
    if (is(j, "ensemble_test", &nlohmann::json::is_number)) ensemble->test = j["ensemble_test"];
    ensemble->answer = is(j, "answer", &nlohmann::json::is_string) && j["answer"] == "ensemble";
  }
  return models;
}

}  // namespace evo
