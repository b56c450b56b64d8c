// Summaries for the benchmark tables: every figure is a median and a p99
// (nearest rank) over its samples, in milliseconds unless said otherwise.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

namespace s5bench {

struct Summary {
    double median = 0, p99 = 0;
    size_t n = 0;
};

inline Summary summarize(std::vector<double> v) {
    Summary s;
    s.n = v.size();
    if (v.empty()) return s;
    std::sort(v.begin(), v.end());
    s.median = v.size() % 2 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
    size_t rank = static_cast<size_t>(std::ceil(0.99 * static_cast<double>(v.size())));
    s.p99 = v[std::clamp<size_t>(rank, 1, v.size()) - 1];
    return s;
}

// "1.23" with a precision that suits the magnitude: 3 significant digits.
inline std::string num(double x) {
    char b[32];
    if (x >= 100)
        std::snprintf(b, sizeof b, "%.0f", x);
    else if (x >= 10)
        std::snprintf(b, sizeof b, "%.1f", x);
    else if (x >= 1)
        std::snprintf(b, sizeof b, "%.2f", x);
    else
        std::snprintf(b, sizeof b, "%.3f", x);
    return b;
}

inline std::string ratio(double x) {
    char b[32];
    std::snprintf(b, sizeof b, x >= 10 ? "%.0f×" : "%.2f×", x);
    return b;
}

inline const char* verdict(bool met) { return met ? "**met**" : "**missed**"; }

}  // namespace s5bench
