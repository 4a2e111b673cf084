// "Did you mean ...?" for misspelled names (config keys, sections): the closest candidate by
// edit distance, when it is close enough to be a plausible typo rather than a different word.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace qlt {

// Levenshtein distance (insertions, deletions, substitutions), ASCII case-insensitive, so
// "Max_Seq_Len" is a typo of "max_seq_len" and not three edits away.
std::size_t edit_distance(std::string_view a, std::string_view b);

// The candidate nearest to `word`, if within max(2, |word| / 3) edits; ties go to the earliest
// candidate (callers list candidates in a meaningful order). nullopt when nothing is close.
std::optional<std::string> closest_match(std::string_view word,
                                         const std::vector<std::string>& candidates);

}  // namespace qlt
