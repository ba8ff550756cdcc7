// What every trainer's main() does around its model: the settings (defaults, then
// the checkpoint's, then a JSON file's, then the command line's), resuming from a
// checkpoint, saving checkpoints atomically, and the JSON-lines log.
//
//   Run run;
//   run_settings(&run, &SCHEMA, &cfg, sizeof cfg, argc, argv, usage, NULL);
//   ... derive what the settings leave open (vocabulary size, classes) ...
//   run_check_fixed(&run);                    the model a checkpoint holds cannot change
//   ... build the model ...
//   if (!run_restore(&run, &params, &step, &data_pos, &rng)) init the model;
//   run_open_log(&run, log_path, continuing);
//   ... train, calling run_save ...
//   run_free(&run);
#ifndef UTILS_RUN_H
#define UTILS_RUN_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "utils/utils.h"
#include "utils/config.h"
#include "utils/checkpoint.h"
#include "utils/params.h"
#include "utils/paths.h"
#include "utils/logger.h"
#include "utils/rng.h"

// A program option that is not a setting, such as --visualize IMAGE.
typedef struct {
    const char* name;   // without the dashes
    const char** value; // set when given
} RunFlag;

typedef struct {
    const ConfigSchema* schema;
    void* cfg;                // the trainer's settings
    void* saved;              // the checkpoint's settings (resuming only)
    const char* config_path;  // --config, or NULL
    const char* resume_path;  // --resume, or NULL
    CheckpointInfo ckpt;
    FILE* ckpt_file;          // open at the checkpoint's tensors until run_restore
    Logger log;
} Run;

// Resolves the settings into cfg: the schema's defaults, the checkpoint's own
// settings (--resume), the JSON file (--config), then every --FIELD VALUE of the
// command line. --help calls usage() and exits. flags (NULL, or ending in a {NULL}
// row) are the program's other options.
static void run_settings(Run* run, const ConfigSchema* schema, void* cfg, size_t cfg_size, int argc,
                         char** argv, void (*usage)(void), const RunFlag* flags) {
    memset(run, 0, sizeof(*run));
    run->schema = schema;
    run->cfg = cfg;
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
        run->ckpt_file = checkpoint_open(run->resume_path, &run->ckpt);
        config_apply_json(schema, cfg, run->ckpt.config_json, run->resume_path);
        run->saved = malloc_check(cfg_size);
        memcpy(run->saved, cfg, cfg_size);
    }
    if (run->config_path != NULL) config_load_file(schema, cfg, run->config_path);
    for (int i = 1; i < argc; i += 2) {
        const char* name = argv[i] + 2;
        if (strcmp(name, "config") == 0 || strcmp(name, "resume") == 0) continue;
        const RunFlag* flag = flags;
        while (flag != NULL && flag->name != NULL && strcmp(flag->name, name) != 0) flag++;
        if (flag != NULL && flag->name != NULL) *flag->value = argv[i + 1];
        else config_set_arg(schema, cfg, name, argv[i + 1]);
    }
    config_check(schema, cfg);
}

// Fails when the settings change a field that defines the checkpoint's model.
// Call once the trainer has filled in what the settings leave open.
static void run_check_fixed(const Run* run) {
    if (run->resume_path != NULL) config_check_fixed(run->schema, run->saved, run->cfg, run->resume_path);
}

// When resuming, loads the parameters and AdamW's moments and the run's position
// (step, data position, random state) and returns 1; otherwise returns 0.
static int run_restore(Run* run, Parameters* P, long* step, long* data_pos, Rng* rng) {
    if (run->resume_path == NULL) return 0;
    const char* path = run->resume_path;
    if (run->ckpt.num_params != P->count)
        fail("%s: the checkpoint has %ld parameters, the configured model %ld", path, run->ckpt.num_params,
             P->count);
    checkpoint_read_tensors(run->ckpt_file, path, P->count, P->params, P->m, P->v);
    run->ckpt_file = NULL;
    *step = run->ckpt.step;
    *data_pos = run->ckpt.data_pos;
    rng->state = run->ckpt.rng_state;
    return 1;
}

// Opens the JSON-lines log at path (empty: none) and writes the settings as its
// first line. A run that continues a checkpoint's training appends to its log instead.
static void run_open_log(Run* run, const char* path, int continuing) {
    run->log = logger_open(path, run->resume_path != NULL);
    if (!continuing) {
        char* json = config_to_json(run->schema, run->cfg, 0);
        logger_printf(&run->log, "{\"config\":%s}", json);
        free(json);
    }
}

// Saves the parameters, AdamW's moments, the run's position and its settings to
// pattern ({attention} and {step} replaced), atomically.
static void run_save(const Run* run, const char* pattern, const char* attention, const Parameters* P, long step,
                     long data_pos, const Rng* rng) {
    char path[CONFIG_STR];
    expand_path(path, sizeof path, pattern, attention, step);
    CheckpointInfo info = {P->count, step, data_pos, rng->state, config_to_json(run->schema, run->cfg, 0)};
    checkpoint_save(path, &info, P->params, P->m, P->v);
    free(info.config_json);
    printf("saved checkpoint %s (step %ld)\n", path, step);
}

static void run_free(Run* run) {
    logger_close(&run->log);
    if (run->ckpt_file != NULL) fclose(run->ckpt_file);
    free(run->ckpt.config_json);
    free(run->saved);
}

#endif
