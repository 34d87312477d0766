// Cold-cache helpers for benchmarks: drop a file's pages from the page cache and measure how much
// of it is still cached (mincore on a temporary mapping).
#pragma once

#include <string>

namespace flea::io {

// posix_fadvise(DONTNEED) on the whole file, then verifies with mincore that at most 5% of its
// pages remain resident. Returns whether the cache is now (mostly) cold.
bool drop_page_cache(const std::string& path);
// Fraction of the file's pages in the page cache, in [0, 1]; -1 when it cannot be determined.
double page_cache_resident_fraction(const std::string& path);

}  // namespace flea::io
