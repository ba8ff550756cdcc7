// Run configurations: a struct described by a table of fields, read from a JSON
// file (cJSON), overridden from the command line (--name value), and written back
// to JSON (logs and checkpoint headers store it, so a run describes itself).
// Every problem stops the program with a message naming the source and the field:
// an unknown field, a value of the wrong type, a malformed file.
#ifndef UTILS_CONFIG_H
#define UTILS_CONFIG_H

#include <stddef.h>
#include <limits.h>
#include <cjson/cJSON.h>
#include "utils.h"

#define CONFIG_STR 512  // bytes of a string field, terminator included

typedef enum { CFG_INT, CFG_FLOAT, CFG_BOOL, CFG_STRING } ConfigType;

// A field at `offset` in the config struct: int (CFG_INT, CFG_BOOL), double
// (CFG_FLOAT) or char[CONFIG_STR] (CFG_STRING). `fixed` marks fields that define
// the model: a checkpoint can only be resumed with the same values.
typedef struct {
    const char* name;
    ConfigType type;
    size_t offset;
    int fixed;
    const char* help;
} ConfigField;

typedef struct {
    const ConfigField* fields;
    int count;
} ConfigSchema;

static const char* config_type_name(ConfigType t) {
    switch (t) {
    case CFG_INT: return "an integer";
    case CFG_FLOAT: return "a number";
    case CFG_BOOL: return "true or false";
    case CFG_STRING: return "a string";
    }
    return "?";
}

// Field by name; "-" in the name matches "_" (so --context-window works).
static const ConfigField* config_find(const ConfigSchema* s, const char* name) {
    for (int i = 0; i < s->count; i++) {
        const char* a = s->fields[i].name;
        const char* b = name;
        while (*a && (*a == *b || (*a == '_' && *b == '-'))) { a++; b++; }
        if (*a == '\0' && *b == '\0') return &s->fields[i];
    }
    return NULL;
}

static void config_set_string(const ConfigField* f, void* cfg, const char* value, const char* source) {
    if (strlen(value) >= CONFIG_STR)
        fail("%s: field \"%s\" is longer than %d bytes", source, f->name, CONFIG_STR - 1);
    strcpy((char*)cfg + f->offset, value);
}

// Applies every member of a JSON object; source names the file in messages.
static void config_apply_json(const ConfigSchema* s, void* cfg, const char* text, const char* source) {
    cJSON* root = cJSON_Parse(text);
    if (root == NULL) {
        const char* where = cJSON_GetErrorPtr();
        fail("%s: not valid JSON near \"%.20s\"", source, where ? where : "?");
    }
    if (!cJSON_IsObject(root)) fail("%s: the configuration must be a JSON object", source);
    for (cJSON* item = root->child; item != NULL; item = item->next) {
        const ConfigField* f = config_find(s, item->string);
        if (f == NULL) fail("%s: unknown field \"%s\"", source, item->string);
        char* p = (char*)cfg + f->offset;
        int ok = 0;
        switch (f->type) {
        case CFG_INT:
            ok = cJSON_IsNumber(item) && item->valuedouble == (double)(int)item->valuedouble &&
                 item->valuedouble >= INT_MIN && item->valuedouble <= INT_MAX;
            if (ok) *(int*)p = (int)item->valuedouble;
            break;
        case CFG_FLOAT:
            ok = cJSON_IsNumber(item);
            if (ok) *(double*)p = item->valuedouble;
            break;
        case CFG_BOOL:
            ok = cJSON_IsBool(item);
            if (ok) *(int*)p = cJSON_IsTrue(item);
            break;
        case CFG_STRING:
            ok = cJSON_IsString(item);
            if (ok) config_set_string(f, cfg, item->valuestring, source);
            break;
        }
        if (!ok) {
            char* shown = cJSON_PrintUnformatted(item);
            fail("%s: field \"%s\" must be %s, got %s", source, f->name, config_type_name(f->type),
                 shown ? shown : "?");
        }
    }
    cJSON_Delete(root);
}

static void config_load_file(const ConfigSchema* s, void* cfg, const char* path) {
    FILE* f = fopen_check(path, "rb");
    if (fseek(f, 0, SEEK_END) != 0) fail("%s: cannot seek: %s", path, strerror(errno));
    long size = ftell(f);
    if (size < 0) fail("%s: cannot tell its size: %s", path, strerror(errno));
    rewind(f);
    char* text = (char*)malloc_check((size_t)size + 1);
    fread_check(text, 1, (size_t)size, f, path);
    text[size] = '\0';
    fclose_check(f, path);
    config_apply_json(s, cfg, text, path);
    free(text);
}

// Sets one field from its command-line text.
static void config_set_arg(const ConfigSchema* s, void* cfg, const char* name, const char* value) {
    const ConfigField* f = config_find(s, name);
    if (f == NULL) fail("command line: unknown option --%s (--help lists them)", name);
    char* p = (char*)cfg + f->offset;
    char* end = NULL;
    errno = 0;
    switch (f->type) {
    case CFG_INT: {
        long x = strtol(value, &end, 10);
        if (*value == '\0' || *end != '\0' || errno != 0 || x < INT_MIN || x > INT_MAX)
            fail("command line: --%s must be %s, got \"%s\"", name, config_type_name(f->type), value);
        *(int*)p = (int)x;
        break;
    }
    case CFG_FLOAT: {
        double x = strtod(value, &end);
        if (*value == '\0' || *end != '\0' || errno != 0)
            fail("command line: --%s must be %s, got \"%s\"", name, config_type_name(f->type), value);
        *(double*)p = x;
        break;
    }
    case CFG_BOOL:
        if (strcmp(value, "true") == 0 || strcmp(value, "1") == 0) *(int*)p = 1;
        else if (strcmp(value, "false") == 0 || strcmp(value, "0") == 0) *(int*)p = 0;
        else fail("command line: --%s must be true or false, got \"%s\"", name, value);
        break;
    case CFG_STRING:
        config_set_string(f, cfg, value, "command line");
        break;
    }
}

// The configuration as a JSON object (caller frees the string).
static char* config_to_json(const ConfigSchema* s, const void* cfg, int formatted) {
    cJSON* root = cJSON_CreateObject();
    for (int i = 0; i < s->count; i++) {
        const ConfigField* f = &s->fields[i];
        const char* p = (const char*)cfg + f->offset;
        switch (f->type) {
        case CFG_INT: cJSON_AddNumberToObject(root, f->name, *(const int*)p); break;
        case CFG_FLOAT: cJSON_AddNumberToObject(root, f->name, *(const double*)p); break;
        case CFG_BOOL: cJSON_AddBoolToObject(root, f->name, *(const int*)p); break;
        case CFG_STRING: cJSON_AddStringToObject(root, f->name, p); break;
        }
    }
    char* text = formatted ? cJSON_Print(root) : cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    if (text == NULL) fail("out of memory writing the configuration as JSON");
    return text;
}

static void config_format_value(const ConfigField* f, const void* cfg, char* buf, size_t n) {
    const char* p = (const char*)cfg + f->offset;
    switch (f->type) {
    case CFG_INT: snprintf(buf, n, "%d", *(const int*)p); break;
    case CFG_FLOAT: snprintf(buf, n, "%.17g", *(const double*)p); break;
    case CFG_BOOL: snprintf(buf, n, "%s", *(const int*)p ? "true" : "false"); break;
    case CFG_STRING: snprintf(buf, n, "\"%s\"", p); break;
    }
}

// Fails, naming source, when a fixed field of `have` differs from `want`.
static void config_check_fixed(const ConfigSchema* s, const void* have, const void* want,
                               const char* source) {
    for (int i = 0; i < s->count; i++) {
        const ConfigField* f = &s->fields[i];
        if (!f->fixed) continue;
        char a[CONFIG_STR + 8], b[CONFIG_STR + 8];
        config_format_value(f, have, a, sizeof(a));
        config_format_value(f, want, b, sizeof(b));
        if (strcmp(a, b) != 0)
            fail("%s: the checkpoint's model has %s = %s but the configuration asks for %s",
                 source, f->name, a, b);
    }
}

static void config_print_help(const ConfigSchema* s, const void* defaults) {
    for (int i = 0; i < s->count; i++) {
        const ConfigField* f = &s->fields[i];
        char v[CONFIG_STR + 8];
        config_format_value(f, defaults, v, sizeof(v));
        printf("  --%-20s %s (default %s)\n", f->name, f->help, v);
    }
}

#endif
