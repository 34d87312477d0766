// run_lab_harness: placeholder entry point, replaced by the harness implementation.
#include <cstdio>
int main(int argc, char** argv) {
  std::fprintf(stderr, "run_lab_harness: not built yet\n");
  return 2;
}
