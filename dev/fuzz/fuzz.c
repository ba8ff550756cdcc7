// One libFuzzer target of dev/fuzz/targets.h, chosen at build time:
//   clang -fsanitize=fuzzer,address,undefined -DFUZZING -DFUZZ_TARGET=fuzz_vocab ...
// (make fuzz builds and runs them all). fail() jumps back here, so an input the reader
// refuses is an ordinary outcome; the files and descriptors a refused read left open
// are closed.
// stb_image is compiled here, for the image decoding target.
#define STB_IMAGE_IMPLEMENTATION
#include "dev/fuzz/targets.h"

#define FUZZ_MAX_FD 256

int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    static unsigned char was_open[FUZZ_MAX_FD];
    for (int fd = 0; fd < FUZZ_MAX_FD; fd++) was_open[fd] = fcntl(fd, F_GETFD) != -1;
    if (setjmp(fail_jump) == 0) FUZZ_TARGET(data, size);
    for (size_t i = 0; i < sizeof(fuzz_open_files) / sizeof(fuzz_open_files[0]); i++) {
        if (fuzz_open_files[i] != NULL) fclose(fuzz_open_files[i]);
        fuzz_open_files[i] = NULL;
    }
    for (int fd = 0; fd < FUZZ_MAX_FD; fd++)
        if (!was_open[fd] && fcntl(fd, F_GETFD) != -1) close(fd);
    return 0;
}
