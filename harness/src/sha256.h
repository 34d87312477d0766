// SHA-256 of a byte string (FIPS 180-4, through OpenSSL libcrypto), for the scenario fingerprint in
// every results file.
#pragma once

#include <string>

namespace flea::harness {

std::string sha256_hex(const std::string& data);

}  // namespace flea::harness
