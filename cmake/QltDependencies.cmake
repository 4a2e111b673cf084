# System libraries from Debian packages (scripts/setup.sh installs them); bundled as qlt::deps.
find_package(nlohmann_json 3.10 REQUIRED)
find_package(CLI11 2.1 REQUIRED)
find_package(fmt REQUIRED)
find_package(spdlog REQUIRED)
find_package(PkgConfig REQUIRED)
pkg_check_modules(SENTENCEPIECE REQUIRED IMPORTED_TARGET sentencepiece)
# Unicode-aware regular expressions for byte-level BPE pre-tokenizers (tokenizer/).
pkg_check_modules(PCRE2 REQUIRED IMPORTED_TARGET libpcre2-8)
# SHA-1 of checkpoint files, streamed (io/folder_manifest.cpp): libcrypto's EVP digests.
find_package(OpenSSL 3 REQUIRED COMPONENTS Crypto)

add_library(qlt_deps INTERFACE)
target_link_libraries(qlt_deps INTERFACE nlohmann_json::nlohmann_json CLI11::CLI11 spdlog::spdlog
                      fmt::fmt PkgConfig::SENTENCEPIECE PkgConfig::PCRE2 OpenSSL::Crypto)
add_library(qlt::deps ALIAS qlt_deps)
