#include "engine/data_source.h"

#include <sys/stat.h>

#include <algorithm>
#include <cstdio>
#include <optional>
#include <utility>

#include "engine/augment.h"
#include "engine/csv_table.h"
#include "engine/data_split.h"
#include "engine/dataset.h"
#include "engine/error.h"
#include "engine/image_folder.h"
#include "engine/synthetic_task.h"

namespace ember {
namespace {

bool is_directory(const std::string& path) {
  struct stat info {};
  return ::stat(path.c_str(), &info) == 0 && S_ISDIR(info.st_mode);
}

bool is_file(const std::string& path) {
  struct stat info {};
  return ::stat(path.c_str(), &info) == 0 && S_ISREG(info.st_mode);
}

bool holds_idx_files(const std::string& directory) {
  return is_file(directory + "/train-images-idx3-ubyte.gz") || is_file(directory + "/train-images-idx3-ubyte");
}

std::int64_t test_batch_size(const TrainOptions& options) { return std::max<std::int64_t>(options.batch_size, 256); }

// Problems found while validating a data set against the model, reported together.
class Problems {
 public:
  void add(const std::string& problem) { problems_.push_back(problem); }
  void throw_if_any(const std::string& what) const {
    if (problems_.empty()) return;
    if (problems_.size() == 1) throw Error(problems_[0]);
    std::string text = what + ": " + std::to_string(problems_.size()) + " problems:";
    for (const std::string& p : problems_) text += "\n  " + p;
    throw Error(text);
  }

 private:
  std::vector<std::string> problems_;
};

std::string joined(const std::vector<std::string>& names) {
  std::string text;
  for (const std::string& n : names) text += (text.empty() ? "" : ", ") + n;
  return text;
}

void check_labels(Problems& problems, const std::string& source, const std::vector<std::int32_t>& labels, std::int64_t outputs) {
  for (std::size_t i = 0; i < labels.size(); ++i) {
    if (labels[i] < 0 || labels[i] >= outputs) {
      problems.add(source + ": sample " + std::to_string(i + 1) + " has label " + std::to_string(labels[i]) +
                   " but the model has " + std::to_string(outputs) + " outputs (labels must be in [0, " +
                   std::to_string(outputs) + "))");
      return;
    }
  }
}

void check_class_count(Problems& problems, const std::string& source, const std::vector<std::string>& names, std::int64_t outputs) {
  if (!names.empty() && static_cast<std::int64_t>(names.size()) != outputs) {
    problems.add(source + ": " + std::to_string(names.size()) + " classes (" + joined(names) + ") but the model has " +
                 std::to_string(outputs) + " outputs; a model for it has one output per class");
  }
}

template <class Loader, class Set>
void connect(TrainingData& data, std::shared_ptr<Loader> train, std::shared_ptr<Loader> test, const Set& train_set,
             const Set& test_set) {
  data.train_size = train_set.count;
  data.test_size = test_set.count;
  data.train_batches = train->batches_per_epoch();
  data.test_batches = test->batches_per_epoch();
  data.train_batch = [train](int e, std::int64_t b, float* x, std::int32_t* l, float* y, const SampleFilter& wanted) {
    return train->load(e, b, x, l, y, wanted);
  };
  data.test_batch = [test](int e, std::int64_t b, float* x, std::int32_t* l, float* y, const SampleFilter& wanted) {
    return test->load(e, b, x, l, y, wanted);
  };
}

// The loaders' load() with the trainer's signature.
struct ImageLoader {
  std::unique_ptr<BatchLoader> loader;
  std::int64_t batches_per_epoch() const { return loader->batches_per_epoch(); }
  std::int64_t load(int e, std::int64_t b, float* x, std::int32_t* l, float*, const SampleFilter& wanted) const {
    return loader->load(e, b, x, l, wanted);
  }
};
struct SyntheticLoader {
  std::unique_ptr<RegressionLoader> loader;
  std::int64_t batches_per_epoch() const { return loader->batches_per_epoch(); }
  std::int64_t load(int e, std::int64_t b, float* x, std::int32_t*, float* y, const SampleFilter& wanted) const {
    return loader->load(e, b, x, y, wanted);
  }
};

TrainingData open_synthetic(const ModelDataNeeds& model, const TrainOptions& options) {
  TrainingData data;
  auto sets = std::make_shared<std::pair<RegressionDataset, RegressionDataset>>(
      attention_retrieval_split(Split::train, options.train_limit, options.seed),
      attention_retrieval_split(Split::test, options.test_limit, options.seed));
  if (!(sets->first.sample_shape == model.input)) {
    throw Error(std::string(attention_retrieval_name) + ": samples are " + sets->first.sample_shape.str() +
                " but the model's input is " + model.input.str());
  }
  auto train = std::make_shared<SyntheticLoader>(SyntheticLoader{std::make_unique<RegressionLoader>(sets->first, options.batch_size, options.seed, true)});
  auto test = std::make_shared<SyntheticLoader>(SyntheticLoader{std::make_unique<RegressionLoader>(sets->second, test_batch_size(options), options.seed, false)});
  connect(data, train, test, sets->first, sets->second);
  data.target_floats = sets->first.outputs;
  data.owner = sets;
  return data;
}

// Image datasets (IDX or folder) once loaded: validated, normalized, batched.
struct ImageSets {
  Dataset train, test;
  std::unique_ptr<Augmenter> augmenter;
};

TrainingData connect_images(std::shared_ptr<ImageSets> sets, const ModelDataNeeds& model, const TrainOptions& options) {
  Problems problems;
  check_class_count(problems, sets->train.source, sets->train.class_names, model.outputs);
  check_labels(problems, sets->train.source, sets->train.labels, model.outputs);
  check_labels(problems, sets->test.source, sets->test.labels, model.outputs);
  std::optional<ImageFormat> format;
  try {
    format = image_format_for(model.input, sets->train, options.mean, options.std);
  } catch (const Error& e) {
    problems.add(e.what());
  }
  AugmentSpec augment;
  try {
    augment = parse_augment_spec(options.data_options.augment);
  } catch (const Error& e) {
    problems.add(e.what());
  }
  problems.throw_if_any(sets->train.source);
  if (!augment.empty()) sets->augmenter = std::make_unique<Augmenter>(augment, options.seed);
  TrainingData data;
  auto train = std::make_shared<ImageLoader>(ImageLoader{std::make_unique<BatchLoader>(
      sets->train, *format, options.batch_size, options.seed, /*shuffle=*/true, sets->augmenter.get())});
  auto test = std::make_shared<ImageLoader>(
      ImageLoader{std::make_unique<BatchLoader>(sets->test, *format, test_batch_size(options), options.seed, /*shuffle=*/false)});
  connect(data, train, test, sets->train, sets->test);
  if (!sets->train.class_names.empty()) data.metadata["class_names"] = sets->train.class_names;
  data.owner = sets;
  return data;
}

// Options that only image folders or CSV files take are refused, not ignored.
void check_idx_options(const std::string& name, const DataOptions& d) {
  const char* option = d.val_split > 0.0              ? "--val-split"
                       : !d.test_data.empty()         ? "--test-data"
                       : !d.convert.empty()           ? "--convert"
                       : d.resize_height > 0          ? "--resize"
                       : !d.label_column.empty()      ? "--label-column"
                       : d.standardize                ? "--standardize"
                                                      : nullptr;
  if (option != nullptr) {
    throw Error(std::string(option) + ": " + name + " is an IDX dataset with its own test split and image size; " + option +
                " applies to image folders and CSV files");
  }
}

TrainingData open_idx(const std::string& name, const ModelDataNeeds& model, const TrainOptions& options) {
  check_idx_options(name, options.data_options);
  auto sets = std::make_shared<ImageSets>();
  sets->train = load_dataset(name, Split::train, options.train_limit);
  sets->test = load_dataset(name, Split::test, options.test_limit);
  return connect_images(sets, model, options);
}

// --- image folders ---

ImageFolderFormat folder_format(const std::string& directory, const ModelDataNeeds& model, const TrainOptions& options) {
  const DataOptions& d = options.data_options;
  const Shape& input = model.input;
  if (input.rank() != 3 || (input[0] != 1 && input[0] != 3)) {
    throw Error(directory + ": an image folder needs a model whose input is (1 or 3 channels, H, W), found " + input.str());
  }
  ImageFolderFormat format;
  format.channels = input[0];
  format.resize = d.resize_height > 0;
  format.height = format.resize ? d.resize_height : input[1];
  format.width = format.resize ? d.resize_width : input[2];
  if (!d.convert.empty() && (d.convert == "rgb" ? 3 : 1) != format.channels) {
    throw Error("--convert " + d.convert + ": the model takes " + std::to_string(format.channels) + "-channel inputs " +
                input.str() + "; expected --convert " + (format.channels == 3 ? "rgb" : "grey"));
  }
  format.convert = d.convert;
  format.skip_bad_files = d.skip_bad_files;
  format.threads = options.threads;
  format.cache_limit = d.cache_limit;
  format.cache = d.cache;
  return format;
}

Dataset load_reporting(const std::string& directory, const ImageFolderFormat& format, TrainingObserver& observer) {
  auto progress = [&](const std::string& d, std::int64_t done, std::int64_t total) {
    observer.on_data("decoding " + d + ": " + std::to_string(done) + "/" + std::to_string(total) + " images");
  };
  ImageFolderSet set = load_image_folder(directory, format, progress);
  if (set.from_cache) {
    observer.on_data(directory + ": " + std::to_string(set.dataset.count) + " images from the decoded-image cache");
  }
  if (!set.skipped.empty()) {
    std::string names;
    for (std::size_t i = 0; i < std::min<std::size_t>(set.skipped.size(), 5); ++i) names += (i ? ", " : "") + set.skipped[i];
    observer.on_data(directory + ": skipped " + std::to_string(set.skipped.size()) + " unreadable file(s) (--skip-bad-files): " +
                     names + (set.skipped.size() > 5 ? ", ..." : ""));
  }
  return std::move(set.dataset);
}

Dataset dataset_rows(const Dataset& all, const std::vector<std::int64_t>& indices) {
  Dataset out;
  out.source = all.source;
  out.count = static_cast<std::int64_t>(indices.size());
  out.channels = all.channels;
  out.height = all.height;
  out.width = all.width;
  out.classes = all.classes;
  out.class_names = all.class_names;
  const std::int64_t bytes = all.sample_bytes();
  for (std::int64_t i : indices) {
    out.images.insert(out.images.end(), all.images.begin() + i * bytes, all.images.begin() + (i + 1) * bytes);
    out.labels.push_back(all.labels[static_cast<std::size_t>(i)]);
  }
  return out;
}

void keep_first(Dataset& d, std::int64_t limit) {
  if (limit <= 0 || limit >= d.count) return;
  d.count = limit;
  d.images.resize(static_cast<std::size_t>(limit * d.sample_bytes()));
  d.labels.resize(static_cast<std::size_t>(limit));
}

TrainingData open_image_folder(const std::string& directory, const ModelDataNeeds& model, const TrainOptions& options,
                               TrainingObserver& observer) {
  const ImageFolderFormat format = folder_format(directory, model, options);
  const double val_split = options.data_options.val_split;
  const std::string train_directory = directory + "/train";
  const std::string test_directory = is_directory(directory + "/test") ? directory + "/test"
                                     : is_directory(directory + "/val") ? directory + "/val" : std::string();
  auto sets = std::make_shared<ImageSets>();
  if (is_directory(train_directory) && !test_directory.empty()) {
    if (val_split > 0.0) throw Error("--val-split: " + directory + " has its own test split (" + test_directory + "); leave --val-split out");
    sets->train = load_reporting(train_directory, format, observer);
    sets->test = load_reporting(test_directory, format, observer);
    if (sets->train.class_names != sets->test.class_names) {
      throw Error(test_directory + ": the classes (" + joined(sets->test.class_names) + ") differ from those of " + train_directory +
                  " (" + joined(sets->train.class_names) + "); both splits need the same class folders");
    }
  } else if (val_split > 0.0) {
    const Dataset all = load_reporting(is_directory(train_directory) ? train_directory : directory, format, observer);
    const SplitIndices split = split_indices(all.count, val_split, options.seed, directory);
    sets->train = dataset_rows(all, split.train);
    sets->test = dataset_rows(all, split.test);
  } else {
    throw Error(directory + ": no test split: expected " + directory + "/train and " + directory +
                "/test (or val) sub-folders, or --val-split F to hold out a fraction F of the images");
  }
  keep_first(sets->train, options.train_limit);
  keep_first(sets->test, options.test_limit);
  return connect_images(sets, model, options);
}

// --- CSV tables ---

struct TableSets {
  TableDataset train, test;
};

struct TableBatches {
  std::unique_ptr<TableLoader> loader;
  std::int64_t batches_per_epoch() const { return loader->batches_per_epoch(); }
  // Tables are small: a rank loads the whole batch (the filter only saves reading).
  std::int64_t load(int e, std::int64_t b, float* x, std::int32_t* l, float* y, const SampleFilter&) const {
    return loader->load(e, b, x, l, y);
  }
};

void split_table(TableSets& sets, const std::string& path, const ModelDataNeeds& model, const TrainOptions& options) {
  const DataOptions& d = options.data_options;
  LabelColumn label{d.label_column, model.regression, nullptr};
  TableDataset all = table_dataset(read_csv(path), label);
  if (!d.test_data.empty()) {
    if (d.val_split > 0.0) throw Error("--val-split: --test-data " + d.test_data + " is the test split; give one of the two");
    label.training = &all;
    sets.test = table_dataset(read_csv(d.test_data), label);
    if (sets.test.feature_names != all.feature_names) {
      throw Error(d.test_data + ": the feature columns (" + joined(sets.test.feature_names) + ") differ from those of " + path +
                  " (" + joined(all.feature_names) + ")");
    }
    sets.train = std::move(all);
  } else if (d.val_split > 0.0) {
    const SplitIndices split = split_indices(all.count, d.val_split, options.seed, path);
    sets.train = table_rows(all, split.train);
    sets.test = table_rows(all, split.test);
  } else {
    throw Error(path + ": no test split: pass --test-data FILE.csv or --val-split F to hold out a fraction F of the rows");
  }
  for (auto [set, limit] : {std::pair{&sets.train, options.train_limit}, std::pair{&sets.test, options.test_limit}}) {
    if (limit > 0 && limit < set->count) {
      std::vector<std::int64_t> first(static_cast<std::size_t>(limit));
      for (std::int64_t i = 0; i < limit; ++i) first[static_cast<std::size_t>(i)] = i;
      *set = table_rows(*set, first);
    }
  }
}

void validate_table(const TableSets& sets, const ModelDataNeeds& model) {
  Problems problems;
  const TableDataset& t = sets.train;
  if (model.input.elements() != t.features || model.input.rank() != 1) {
    problems.add(t.source + ": " + std::to_string(t.features) + " feature columns (" + joined(t.feature_names) +
                 ") but the model takes inputs " + model.input.str() + "; a model for it takes " + Shape({t.features}).str());
  }
  if (model.regression && model.outputs != t.target_count) {
    problems.add(t.source + ": " + std::to_string(t.target_count) + " target column(s) but the model has " +
                 std::to_string(model.outputs) + " outputs; a regression model for it has one output per target column");
  }
  if (!model.regression) {
    check_class_count(problems, t.source, t.class_names, model.outputs);
    check_labels(problems, t.source, t.labels, model.outputs);
    check_labels(problems, sets.test.source, sets.test.labels, model.outputs);
  }
  problems.throw_if_any(t.source);
}

TrainingData open_table(const std::string& path, const ModelDataNeeds& model, const TrainOptions& options) {
  auto sets = std::make_shared<TableSets>();
  split_table(*sets, path, model, options);
  validate_table(*sets, model);
  TrainingData data;
  if (options.data_options.standardize) {
    const FeatureStatistics statistics = feature_statistics(sets->train);
    standardize(sets->train, statistics);
    standardize(sets->test, statistics);
    data.metadata["feature_mean"] = statistics.mean;
    data.metadata["feature_std"] = statistics.std;
  }
  auto train = std::make_shared<TableBatches>(TableBatches{std::make_unique<TableLoader>(sets->train, options.batch_size, options.seed, true)});
  auto test = std::make_shared<TableBatches>(TableBatches{std::make_unique<TableLoader>(sets->test, test_batch_size(options), options.seed, false)});
  connect(data, train, test, sets->train, sets->test);
  data.target_floats = model.regression ? sets->train.target_count : 0;
  if (!sets->train.class_names.empty()) data.metadata["class_names"] = sets->train.class_names;
  data.owner = sets;
  return data;
}

}  // namespace

Json normalization_json(const std::vector<double>& values) {
  return values.size() == 1 ? Json(values[0]) : Json(values);
}

void add_data_options(Json& run, const DataOptions& o) {
  const DataOptions defaults;
  if (o.val_split != defaults.val_split) run["val_split"] = o.val_split;
  if (!o.test_data.empty()) run["test_data"] = o.test_data;
  if (!o.convert.empty()) run["convert"] = o.convert;
  if (o.resize_height > 0) run["resize"] = Json::array({o.resize_height, o.resize_width});
  if (!o.augment.empty()) run["augment"] = o.augment;
  if (!o.label_column.empty()) run["label_column"] = o.label_column;
  if (o.standardize) run["standardize"] = true;
}

DataOptions data_options_from_run(const Json& run, const std::string& path) {
  DataOptions o;
  const auto field = [&](const char* key, Json::value_t type, const char* expected) -> const Json* {
    if (!run.contains(key)) return nullptr;
    const Json& value = run[key];
    const bool fits = value.type() == type || (type == Json::value_t::number_float && value.is_number());
    if (!fits) throw Error(path + ": __metadata__.run." + key + ": expected " + expected + ", found " + value.dump());
    return &value;
  };
  if (const Json* v = field("val_split", Json::value_t::number_float, "a number")) o.val_split = v->get<double>();
  if (const Json* v = field("test_data", Json::value_t::string, "a string")) o.test_data = v->get<std::string>();
  if (const Json* v = field("convert", Json::value_t::string, "a string")) o.convert = v->get<std::string>();
  if (const Json* v = field("augment", Json::value_t::string, "a string")) o.augment = v->get<std::string>();
  if (const Json* v = field("label_column", Json::value_t::string, "a string")) o.label_column = v->get<std::string>();
  if (const Json* v = field("standardize", Json::value_t::boolean, "true or false")) o.standardize = v->get<bool>();
  if (const Json* v = field("resize", Json::value_t::array, "[height, width]")) {
    if (v->size() != 2 || !(*v)[0].is_number_unsigned() || !(*v)[1].is_number_unsigned()) {
      throw Error(path + ": __metadata__.run.resize: expected [height, width], found " + v->dump());
    }
    o.resize_height = (*v)[0].get<std::int64_t>();
    o.resize_width = (*v)[1].get<std::int64_t>();
  }
  return o;
}

TrainingData open_training_data(const std::string& name, const ModelDataNeeds& model, const TrainOptions& options,
                                TrainingObserver& observer) {
  TrainingData data;
  if (name == attention_retrieval_name) {
    data = open_synthetic(model, options);
  } else if (name.ends_with(".csv") || name.ends_with(".CSV")) {
    data = open_table(name, model, options);
  } else if (name == "fashion-mnist" || name == "mnist" || !is_directory(name) || holds_idx_files(name)) {
    data = open_idx(name, model, options);
  } else {
    data = open_image_folder(name, model, options, observer);
  }
  data.max_batch = std::max(options.batch_size, test_batch_size(options));
  data.train_batch_size = options.batch_size;
  data.test_batch_size = test_batch_size(options);
  return data;
}

}  // namespace ember
