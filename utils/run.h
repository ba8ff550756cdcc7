// What every trainer's main() does around its model: the settings (defaults, then
// the checkpoint's, then a JSON file's, then the command line's), resuming from a
// checkpoint, the memory a run needs, saving checkpoints atomically, and the
// JSON-lines log. With several ranks (utils/dist.h) rank 0 reads the checkpoint and
// writes the log and checkpoints; every rank checks that the others have its settings.
//
//   Dist dist = dist_init(&argc, &argv);
//   Run run;
//   run_settings(&run, &dist, &SCHEMA, &cfg, sizeof cfg, argc, argv, usage, NULL);
//   ... derive what the settings leave open (vocabulary size, classes) ...
//   run_check_fixed(&run);                    the model a checkpoint holds cannot change
//   ... read the data, lay out the model ...
//   run_check_ranks(&run, train_hash, val_hash);   every rank has the same settings and data
//   run_check_memory(bytes, cfg.memory_limit);
//   ... allocate the model ...
//   if (!run_restore(&run, &params, &step, &data_pos, &rng)) init the model;
//   ... declare the gradient buckets of a DistParams dp, dist_params_share(&dp) ...
//   run_outputs(&run, cfg.log_file, cfg.checkpoint, cfg.checkpoint_interval, cfg.attention, cfg.train_data);
//   run_open_log(&run, continuing);
//   ... train, calling run_save_due and run_save ...
//   run_free(&run);
//   dist_finalize();
#ifndef UTILS_RUN_H
#define UTILS_RUN_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <ctype.h>
#include <unistd.h>
#include "utils/utils.h"
#include "utils/config.h"
#include "utils/checkpoint.h"
#include "utils/params.h"
#include "utils/paths.h"
#include "utils/logger.h"
#include "utils/rng.h"
#include "utils/dist.h"

// A program option that is not a setting, such as --visualize IMAGE.
typedef struct {
    const char* name;   // without the dashes
    const char** value; // set when given
} RunFlag;

typedef struct {
    const Dist* dist;
    const ConfigSchema* schema;
    void* cfg;                // the trainer's settings
    size_t cfg_size;
    void* saved;              // the checkpoint's settings (resuming only)
    unsigned char* given;     // per field: set by --config or the command line
    const char* config_path;  // --config, or NULL
    const char* resume_path;  // --resume, or NULL
    CheckpointInfo ckpt;
    FILE* ckpt_file;          // open at the checkpoint's tensors until run_restore (rank 0)
    // outputs (run_outputs)
    const char* log_pattern;  // {attention}, {data} and {step} are replaced
    const char* ckpt_pattern;
    int ckpt_interval;
    const char* attention;
    char data_name[64];       // what {data} stands for
    Logger log;
} Run;

// Every rank's info gets rank 0's, which read the checkpoint's header.
static void run_share_checkpoint_info(const Dist* d, CheckpointInfo* info) {
    int64_t head[5] = {info->num_params, info->step, info->data_pos, (int64_t)info->rng_state,
                       d->rank == 0 ? (int64_t)strlen(info->config_json) : 0};
    dist_broadcast(d, head, sizeof head);
    info->num_params = head[0];
    info->step = head[1];
    info->data_pos = head[2];
    info->rng_state = (uint64_t)head[3];
    if (d->rank != 0) info->config_json = (char*)malloc_check((size_t)head[4] + 1);
    dist_broadcast(d, info->config_json, (size_t)head[4] + 1);
}

// Resolves the settings into cfg: the schema's defaults, the checkpoint's own
// settings (--resume), the JSON file (--config), then every --FIELD VALUE of the
// command line. --help calls usage() and exits. flags (NULL, or ending in a {NULL}
// row) are the program's other options.
static void run_settings(Run* run, const Dist* dist, const ConfigSchema* schema, void* cfg, size_t cfg_size,
                         int argc, char** argv, void (*usage)(void), const RunFlag* flags) {
    memset(run, 0, sizeof(*run));
    run->dist = dist;
    run->schema = schema;
    run->cfg = cfg;
    run->cfg_size = cfg_size;
    run->given = (unsigned char*)calloc_check((size_t)schema->count, 1);
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage();
            exit(0);
        }
        if (strncmp(argv[i], "--", 2) != 0 || i + 1 >= argc)
            fail("command line: expected --FIELD VALUE pairs, got \"%s\" (--help lists them)", argv[i]);
        i++;
    }
    config_set_defaults(schema, cfg, cfg_size);
    for (int i = 1; i < argc; i += 2) {
        if (strcmp(argv[i], "--config") == 0) run->config_path = argv[i + 1];
        else if (strcmp(argv[i], "--resume") == 0) run->resume_path = argv[i + 1];
    }
    if (run->resume_path != NULL) {
        if (dist->rank == 0) run->ckpt_file = checkpoint_open(run->resume_path, &run->ckpt);
        run_share_checkpoint_info(dist, &run->ckpt);
        config_apply_json(schema, cfg, run->ckpt.config_json, run->resume_path);
    }
    // what the JSON file and the command line change counts as given
    run->saved = malloc_check(cfg_size);
    memcpy(run->saved, cfg, cfg_size);
    if (run->config_path != NULL) config_load_file(schema, cfg, run->config_path);
    for (int i = 1; i < argc; i += 2) {
        const char* name = argv[i] + 2;
        if (strcmp(name, "config") == 0 || strcmp(name, "resume") == 0) continue;
        const RunFlag* flag = flags;
        while (flag != NULL && flag->name != NULL && strcmp(flag->name, name) != 0) flag++;
        if (flag != NULL && flag->name != NULL) {
            *flag->value = argv[i + 1];
            continue;
        }
        config_set_arg(schema, cfg, name, argv[i + 1]);
        run->given[config_find(schema, name) - schema->fields] = 1;
    }
    for (int i = 0; i < schema->count; i++) {
        char a[CONFIG_STR + 8], b[CONFIG_STR + 8];
        config_format_value(&schema->fields[i], run->saved, a, sizeof a);
        config_format_value(&schema->fields[i], cfg, b, sizeof b);
        if (strcmp(a, b) != 0) run->given[i] = 1;
    }
    config_check(schema, cfg);
}

// Whether the setting called name was given by --config or on the command line.
static int run_given(const Run* run, const char* name) {
    const ConfigField* f = config_find(run->schema, name);
    return f != NULL && run->given[f - run->schema->fields];
}

// Fails when the settings change a field that defines the checkpoint's model.
// Call once the trainer has filled in what the settings leave open.
static void run_check_fixed(const Run* run) {
    if (run->resume_path != NULL) config_check_fixed(run->schema, run->saved, run->cfg, run->resume_path);
}

// Fails on a rank whose settings differ from rank 0's, naming the first that
// differs, or whose training or validation data do (train_hash, val_hash: the
// trainer's hashes of what it read). Call once the settings are complete.
static void run_check_ranks(const Run* run, uint64_t train_hash, uint64_t val_hash) {
    const Dist* d = run->dist;
    char* json = config_to_json(run->schema, run->cfg, 0);
    if (!dist_same(d, dist_hash(0, json, strlen(json)))) {
        // rank 0's settings, to name the first one that differs
        int64_t n = (int64_t)strlen(json) + 1;
        dist_broadcast(d, &n, sizeof n);
        char* first = (char*)malloc_check((size_t)n);
        if (d->rank == 0) memcpy(first, json, (size_t)n);
        dist_broadcast(d, first, (size_t)n);
        if (strcmp(json, first) != 0) {
            void* theirs = malloc_check(run->cfg_size);
            config_set_defaults(run->schema, theirs, run->cfg_size);
            config_apply_json(run->schema, theirs, first, "rank 0's settings");
            for (int i = 0; i < run->schema->count; i++) {
                char a[CONFIG_STR + 8], b[CONFIG_STR + 8];
                config_format_value(&run->schema->fields[i], run->cfg, a, sizeof a);
                config_format_value(&run->schema->fields[i], theirs, b, sizeof b);
                if (strcmp(a, b) != 0)
                    fail("rank %d: setting %s is %s here but %s on rank 0; launch every rank with the same "
                         "command line, configuration file and data", d->rank, run->schema->fields[i].name, a, b);
            }
            fail("rank %d: the settings differ from rank 0's beyond the digits printed; launch every rank with "
                 "the same command line, configuration file and data", d->rank);
        }
        free(first);
    }
    free(json);
    dist_check_same(d, train_hash, "training data (train_data)");
    dist_check_same(d, val_hash, "validation data (val_data)");
}

// Stops before allocating when a run needs more than limit_gb GiB of memory (0:
// the machine's physical memory), which the kernel's overcommit would only
// notice by killing the program once the pages are touched.
static void run_check_memory(double bytes, double limit_gb) {
    double physical = (double)sysconf(_SC_PHYS_PAGES) * (double)sysconf(_SC_PAGESIZE);
    double limit = limit_gb > 0 ? limit_gb * 1073741824.0 : physical;
    printf("memory: %.2f GiB needed, limit %.2f GiB%s\n", bytes / 1073741824.0, limit / 1073741824.0,
           limit_gb > 0 ? " (memory_limit)" : " (this machine)");
    if (bytes > limit)
        fail("the run needs %.2f GiB of memory, more than the %.2f GiB %s; make the model or the batch smaller, "
             "or raise --memory_limit (GiB)", bytes / 1073741824.0, limit / 1073741824.0,
             limit_gb > 0 ? "of memory_limit" : "this machine has");
}

// When resuming, loads the parameters and AdamW's moments (on rank 0, which
// dist_params_share hands them from) and the run's position (step, data position,
// random state) and returns 1; otherwise returns 0.
static int run_restore(Run* run, Parameters* P, long* step, long* data_pos, Rng* rng) {
    if (run->resume_path == NULL) return 0;
    const char* path = run->resume_path;
    if (run->ckpt.num_params != P->count)
        fail("%s: the checkpoint has %ld parameters, the configured model %ld", path, run->ckpt.num_params,
             P->count);
    if (run->ckpt_file != NULL) checkpoint_read_tensors(run->ckpt_file, path, P->count, P->params, P->m, P->v);
    run->ckpt_file = NULL;
    *step = run->ckpt.step;
    *data_pos = run->ckpt.data_pos;
    rng->state = run->ckpt.rng_state;
    return 1;
}

// The run's outputs: the log and checkpoint paths ({attention}, {data} and {step}
// are replaced; empty: none), a checkpoint every ckpt_interval updates (0: only
// at the end). {data} is the folder of the training data (data/tinyshakespeare/
// train.bin: "tinyshakespeare"), so that runs on other data do not overwrite these.
static void run_outputs(Run* run, const char* log_pattern, const char* ckpt_pattern, int ckpt_interval,
                        const char* attention, const char* train_data) {
    run->log_pattern = log_pattern;
    run->ckpt_pattern = ckpt_pattern;
    run->ckpt_interval = ckpt_interval;
    run->attention = attention;
    // the last folder of the path, else the file's name up to its extension
    const char* end = strrchr(train_data, '/');
    const char* start = train_data;
    if (end != NULL && end > train_data) {
        start = end;
        while (start > train_data && start[-1] != '/') start--;
    } else {
        start = end != NULL ? end + 1 : train_data;
        end = start + strcspn(start, ".");
    }
    size_t n = 0;
    for (const char* c = start; c < end && n + 1 < sizeof run->data_name; c++)
        run->data_name[n++] = isalnum((unsigned char)*c) || *c == '-' || *c == '_' ? *c : '_';
    run->data_name[n] = '\0';
}

// The path of a pattern at update `step`.
static void run_path(const Run* run, char* out, size_t cap, const char* pattern, long step) {
    expand_path(out, cap, pattern, run->attention, run->data_name, step);
}

// Opens the log (when enabled, its path not empty, on rank 0) and writes the
// settings as its first line. A run that continues a checkpoint's training appends to its log.
static void run_open_log(Run* run, int enabled, int continuing) {
    char path[CONFIG_STR];
    run_path(run, path, sizeof path, enabled && run->dist->rank == 0 ? run->log_pattern : "", 0);
    run->log = logger_open(path, run->resume_path != NULL);
    if (!continuing) {
        char* json = config_to_json(run->schema, run->cfg, 0);
        logger_printf(&run->log, "{\"config\":%s}", json);
        free(json);
    }
}

// Saves the parameters, AdamW's moments, the run's position and its settings
// after update `step`, atomically; rank 0 writes, with the moments of every rank.
// The file is the same whatever the number of ranks. Parameters that are not all
// finite are not saved: the run stops, and the last checkpoint stays the last good one.
static void run_save(const Run* run, const DistParams* dp, long step, long data_pos, const Rng* rng) {
    if (!run->ckpt_pattern[0]) return;
    const Parameters* P = dp->P;
    char path[CONFIG_STR];
    run_path(run, path, sizeof path, run->ckpt_pattern, step);
    if (!params_finite(P))
        fail("step %ld: the parameters are not finite (the run diverged); %s is not written", step, path);
    real *m, *v;
    dist_params_moments(dp, &m, &v);
    if (run->dist->rank == 0) {
        CheckpointInfo info = {P->count, step, data_pos, rng->state, config_to_json(run->schema, run->cfg, 0)};
        checkpoint_save(path, &info, P->params, m, v);
        free(info.config_json);
        printf("saved checkpoint %s (step %ld)\n", path, step);
    }
    if (m != P->m) free(m);
    if (v != P->v) free(v);
}

// run_save when a checkpoint is due after update `step` of `total`: every
// ckpt_interval updates, but not the last (the trainer saves that one at the end).
static void run_save_due(const Run* run, const DistParams* dp, long step, long total, long data_pos,
                         const Rng* rng) {
    if (run->ckpt_interval > 0 && step % run->ckpt_interval == 0 && step < total)
        run_save(run, dp, step, data_pos, rng);
}

static void run_free(Run* run) {
    logger_close(&run->log);
    if (run->ckpt_file != NULL) fclose(run->ckpt_file);
    free(run->ckpt.config_json);
    free(run->saved);
    free(run->given);
}

#endif
