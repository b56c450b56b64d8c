// libFuzzer target: s5d::state::parse (daemon/state_codec.hpp), the state a
// restarted broker reads back from systemd's fd store. It must never crash
// or throw on any image; an image it accepts must encode back to one that
// parses to the same state (nothing half-read). Violations call
// __builtin_trap().

#include <cstddef>
#include <cstdint>
#include <vector>

#include "state_codec.hpp"

namespace {

using namespace s5d::state;

#define CHECK(cond)                    \
    do {                               \
        if (!(cond)) __builtin_trap(); \
    } while (0)

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    auto r = parse({data, size});
    auto* img = std::get_if<Image>(&r);
    if (!img) {
        CHECK(!std::get<std::string>(r).empty());
        CHECK(std::get<std::string>(r).find('\n') == std::string::npos);
        return 0;
    }
    std::vector<uint8_t> again;
    const auto add = [&](const Slot& s) { again.insert(again.end(), s.begin(), s.end()); };
    add(encode(img->header));
    for (const auto& l : img->leases) add(encode(l));
    for (const auto& a : img->associations) add(encode(a));
    auto r2 = parse(again);
    auto* img2 = std::get_if<Image>(&r2);
    CHECK(img2);
    CHECK(img2->header == img->header);
    CHECK(img2->leases == img->leases);
    CHECK(img2->associations == img->associations);
    return 0;
}
