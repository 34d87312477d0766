#include "sha256.h"

#include <openssl/evp.h>

#include <cstdio>
#include <stdexcept>

namespace flea::harness {

std::string sha256_hex(const std::string& data) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int digest_len = 0;
  // EVP_Digest fails only on allocation failure or a provider that cannot load: a broken host.
  if (EVP_Digest(data.data(), data.size(), digest, &digest_len, EVP_sha256(), nullptr) != 1 || digest_len != 32) {
    throw std::runtime_error("sha256: libcrypto EVP_Digest failed");
  }
  char out[65];
  for (unsigned i = 0; i < digest_len; ++i) std::snprintf(out + 2 * i, 3, "%02x", digest[i]);
  return std::string(out, 64);
}

}  // namespace flea::harness
