// Replays the fuzz targets' committed inputs (dev/fuzz/targets.h), each in a child
// process of a plain build, as the programs would meet them:
//  - dev/fuzz/corpus/<target>/: the seed files, valid, must be read (exit 0);
//  - dev/fuzz/regressions/<target>/: inputs that once crashed a reader, or that the
//    hardening was written against, must be read or refused with a message (exit 0 or
//    1), never crash, hang or trip a sanitizer (make sanitize builds this too).
#include <dirent.h>
// stb_image is compiled here, for the image decoding target.
#define STB_IMAGE_IMPLEMENTATION
#include "dev/fuzz/targets.h"
#include "dev/test/testing.h"
#include "dev/test/capture.h"

static char out[4096];
static const FuzzTarget* target;
static unsigned char* input;
static long input_size;

static void run_input(void* arg) {
    alarm(60);
    target->run(input, (size_t)input_size);
}

static int visible(const struct dirent* e) { return e->d_name[0] != '.'; }

// Runs every file of folder, in name order, through target; returns how many there were.
static int replay(const char* folder, int must_read) {
    struct dirent** names;
    int n = scandir(folder, &names, visible, alphasort);
    for (int i = 0; i < n; i++) {
        char path[1024];
        snprintf(path, sizeof(path), "%s/%s", folder, names[i]->d_name);
        free(names[i]);
        input = (unsigned char*)read_whole_file(path, 1L << 24, &input_size);
        int rc = run_captured(run_input, NULL, out, sizeof(out));
        if (must_read) check(rc == 0, "fuzz corpus %s reads (exit %d)%s%s", path, rc, rc ? ": " : "", rc ? error_line(out) : "");
        else check(rc == 0 || rc == 1, "fuzz regression %s: %s (exit %d)", path, rc == 0 ? "read" : error_line(out), rc);
        free(input);
    }
    if (n >= 0) free(names);
    return n < 0 ? 0 : n;
}

int main(void) {
    for (size_t i = 0; i < sizeof(FUZZ_TARGETS) / sizeof(FUZZ_TARGETS[0]); i++) {
        target = &FUZZ_TARGETS[i];
        char folder[256];
        snprintf(folder, sizeof(folder), "dev/fuzz/corpus/%s", target->name);
        int seeds = replay(folder, 1);
        check(seeds > 0, "fuzz target %s has seed inputs in %s (%d)", target->name, folder, seeds);
        snprintf(folder, sizeof(folder), "dev/fuzz/regressions/%s", target->name);
        replay(folder, 0);
    }
    return testing_exit_code();
}
