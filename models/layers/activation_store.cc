#include "models/layers/activation_store.h"

#include "models/layers/device_tensors.h"
#include "runtime/error.h"

namespace gemmapod {

void ActivationStore::Save(int64_t layer, std::string_view name, const Tensor& t) {
  if (keep_ == Keep::kLayerInputs && name != kInput) return;
  saved_[{layer, std::string(name)}] = CopyOf(t);
}

const Tensor& ActivationStore::Get(int64_t layer, std::string_view name) const {
  const auto it = saved_.find(std::pair<int64_t, std::string>(layer, name));
  GEMMAPOD_CHECK(it != saved_.end(), "activation store: layer ", layer, " saved no '", name, "'",
                 keep_ == Keep::kLayerInputs ? " (the store keeps layer inputs only)" : "");
  return it->second;
}

bool ActivationStore::Has(int64_t layer, std::string_view name) const {
  return saved_.count(std::pair<int64_t, std::string>(layer, name)) != 0;
}

int64_t ActivationStore::bytes() const {
  int64_t total = 0;
  for (const auto& [key, t] : saved_) total += static_cast<int64_t>(t.nbytes());
  return total;
}

}  // namespace gemmapod
