// Run configurations: a struct described by a table of fields (a schema). Each
// field is declared once, in its row: name, type, default, allowed values, help.
// Values come from the defaults, a JSON file (cJSON) and the command line
// (--name value), and go back to JSON (logs and checkpoint headers store it, so a
// run describes itself). Every problem stops the program with a message naming
// the source and the field: an unknown field or one given twice, a value of the
// wrong type, not finite or out of its range, a malformed file.
#ifndef UTILS_CONFIG_H
#define UTILS_CONFIG_H

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <cjson/cJSON.h>
#include "utils/utils.h"

#define CONFIG_STR 512               // bytes of a string field, terminator included
#define CONFIG_MAX_FILE (1L << 20)   // bytes of a configuration file

typedef enum { CFG_INT, CFG_FLOAT, CFG_BOOL, CFG_STRING } ConfigType;

// A field at `offset` in the config struct: int (CFG_INT, CFG_BOOL), double
// (CFG_FLOAT) or char[CONFIG_STR] (CFG_STRING).
//   value: the default, written as on the command line ("0.9", "true", "flow").
//   allowed: NULL (anything of the type), an interval for numbers ("[0, 1)",
//     "(0, inf)"), or the choices of a string separated by '|' ("learned|sinusoidal").
//   fixed: the field defines the model, so a checkpoint can only be resumed with
//     the same value.
typedef struct {
    const char* name;
    ConfigType type;
    size_t offset;
    const char* value;
    const char* allowed;
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

// Sets one field from its text as the command line writes it; source names it in messages.
static void config_set_text(const ConfigField* f, void* cfg, const char* value, const char* source) {
    char* p = (char*)cfg + f->offset;
    char* end = NULL;
    errno = 0;
    switch (f->type) {
    case CFG_INT: {
        long x = strtol(value, &end, 10);
        if (*value == '\0' || *end != '\0' || errno != 0 || x < INT_MIN || x > INT_MAX)
            fail("%s: --%s must be %s, got \"%s\"", source, f->name, config_type_name(f->type), value);
        *(int*)p = (int)x;
        break;
    }
    case CFG_FLOAT: {
        double x = strtod(value, &end);
        if (*value == '\0' || *end != '\0' || errno != 0 || !isfinite(x))
            fail("%s: --%s must be a finite number, got \"%s\"", source, f->name, value);
        *(double*)p = x;
        break;
    }
    case CFG_BOOL:
        if (strcmp(value, "true") == 0 || strcmp(value, "1") == 0) *(int*)p = 1;
        else if (strcmp(value, "false") == 0 || strcmp(value, "0") == 0) *(int*)p = 0;
        else fail("%s: --%s must be true or false, got \"%s\"", source, f->name, value);
        break;
    case CFG_STRING:
        config_set_string(f, cfg, value, source);
        break;
    }
}

// Every field to its default.
static void config_set_defaults(const ConfigSchema* s, void* cfg, size_t size) {
    memset(cfg, 0, size);
    for (int i = 0; i < s->count; i++) config_set_text(&s->fields[i], cfg, s->fields[i].value, "default");
}

// Sets one field named on the command line.
static void config_set_arg(const ConfigSchema* s, void* cfg, const char* name, const char* value) {
    const ConfigField* f = config_find(s, name);
    if (f == NULL) fail("command line: unknown option --%s (--help lists them)", name);
    config_set_text(f, cfg, value, "command line");
}

// Whether the JSON text has the escape \u0000 inside a string: cJSON would end the
// string there and silently drop the rest.
static int json_has_nul_escape(const char* text) {
    int in_string = 0;
    for (const char* p = text; *p; p++) {
        if (*p == '"') in_string = !in_string;
        else if (in_string && *p == '\\') {
            if (strncmp(p + 1, "u0000", 5) == 0) return 1;
            if (p[1] != '\0') p++; // the escaped character, which may be a quote
        }
    }
    return 0;
}

// Applies every member of a JSON object; source names the file in messages.
static void config_apply_json(const ConfigSchema* s, void* cfg, const char* text, const char* source) {
    const char* end = NULL;
    cJSON* root = cJSON_ParseWithOpts(text, &end, 0);
    if (root == NULL) {
        const char* where = cJSON_GetErrorPtr();
        fail("%s: not valid JSON near \"%.20s\"", source, where ? where : "?");
    }
    if (!cJSON_IsObject(root)) fail("%s: the configuration must be a JSON object", source);
    end += strspn(end, " \t\r\n");
    if (*end != '\0') fail("%s: text after the JSON object: \"%.20s\"", source, end);
    if (json_has_nul_escape(text)) fail("%s: a string holds \\u0000, which no setting may contain", source);
    unsigned char* seen = (unsigned char*)calloc_check((size_t)s->count, 1);
    for (cJSON* item = root->child; item != NULL; item = item->next) {
        const ConfigField* f = config_find(s, item->string);
        if (f == NULL) fail("%s: unknown field \"%s\"", source, item->string);
        if (seen[f - s->fields]++) fail("%s: field \"%s\" is given twice", source, f->name);
        char* p = (char*)cfg + f->offset;
        double x = item->valuedouble;
        int ok = 0;
        switch (f->type) {
        case CFG_INT: // range first: converting a double outside int's range is undefined
            ok = cJSON_IsNumber(item) && x >= INT_MIN && x <= INT_MAX && x == floor(x);
            if (ok) *(int*)p = (int)x;
            break;
        case CFG_FLOAT:
            ok = cJSON_IsNumber(item) && isfinite(x);
            if (ok) *(double*)p = x;
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
        if (!ok && f->type == CFG_FLOAT && cJSON_IsNumber(item)) // JSON's only way to infinity
            fail("%s: field \"%s\" must be a finite number, got one beyond the range of a double", source,
                 f->name);
        if (!ok) {
            char* shown = cJSON_PrintUnformatted(item);
            fail("%s: field \"%s\" must be %s, got %s", source, f->name, config_type_name(f->type),
                 shown ? shown : "?");
        }
    }
    free(seen);
    cJSON_Delete(root);
}

static void config_load_file(const ConfigSchema* s, void* cfg, const char* path) {
    long size;
    char* text = read_whole_file(path, CONFIG_MAX_FILE, &size);
    if ((long)strlen(text) != size) fail("%s: holds a NUL byte, not JSON text", path);
    config_apply_json(s, cfg, text, path);
    free(text);
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

// The shortest decimal that reads back as x: 0.9, not 0.90000000000000002.
static void config_format_double(double x, char* buf, size_t n) {
    for (int digits = 6; digits <= 17; digits++) {
        snprintf(buf, n, "%.*g", digits, x);
        if (strtod(buf, NULL) == x) return;
    }
}

static void config_format_value(const ConfigField* f, const void* cfg, char* buf, size_t n) {
    const char* p = (const char*)cfg + f->offset;
    switch (f->type) {
    case CFG_INT: snprintf(buf, n, "%d", *(const int*)p); break;
    case CFG_FLOAT: config_format_double(*(const double*)p, buf, n); break;
    case CFG_BOOL: snprintf(buf, n, "%s", *(const int*)p ? "true" : "false"); break;
    case CFG_STRING: snprintf(buf, n, "\"%s\"", p); break;
    }
}

// Whether x lies in an interval written "[lo, hi)", "(0, inf)" ...
static int config_in_interval(double x, const char* interval) {
    char* p;
    double lo = strtod(interval + 1, &p);
    double hi = strtod(p + 1, &p);
    int lo_ok = interval[0] == '[' ? x >= lo : x > lo;
    int hi_ok = *p == ']' ? x <= hi : x < hi;
    return lo_ok && hi_ok;
}

// Whether s is one of the choices "a|b|c".
static int config_is_choice(const char* s, const char* choices) {
    size_t n = strlen(s);
    for (const char* c = choices;; c++) {
        size_t len = strcspn(c, "|");
        if (len == n && strncmp(c, s, n) == 0) return 1;
        c += len;
        if (*c == '\0') return 0;
    }
}

// Stops, naming the field, at the first value outside what its row allows.
static void config_check(const ConfigSchema* s, const void* cfg) {
    for (int i = 0; i < s->count; i++) {
        const ConfigField* f = &s->fields[i];
        if (f->allowed == NULL || f->type == CFG_BOOL) continue;
        const char* p = (const char*)cfg + f->offset;
        char v[CONFIG_STR + 8];
        config_format_value(f, cfg, v, sizeof(v));
        if (f->type == CFG_STRING) {
            if (!config_is_choice(p, f->allowed))
                fail("configuration: %s must be one of %s, got %s", f->name, f->allowed, v);
        } else {
            double x = f->type == CFG_INT ? *(const int*)p : *(const double*)p;
            if (!config_in_interval(x, f->allowed))
                fail("configuration: %s must be in %s, got %s", f->name, f->allowed, v);
        }
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

static void config_print_help(const ConfigSchema* s) {
    for (int i = 0; i < s->count; i++) {
        const ConfigField* f = &s->fields[i];
        const char* quote = f->type == CFG_STRING ? "\"" : "";
        printf("  --%-20s %s (default %s%s%s", f->name, f->help, quote, f->value, quote);
        if (f->allowed != NULL && f->type == CFG_STRING) printf("; one of %s", f->allowed);
        else if (f->allowed != NULL && f->type != CFG_BOOL) printf("; in %s", f->allowed);
        printf(")\n");
    }
}

// A comma-separated list of positive integers (at most max); returns the count.
static int config_parse_int_list(const char* text, int* out, int max, const char* field) {
    int n = 0;
    const char* p = text;
    while (*p) {
        char* end;
        long v = strtol(p, &end, 10);
        if (end == p || v < 1 || v > 1000000 || n == max || (*end != ',' && *end != '\0'))
            fail("configuration: %s must be up to %d positive integers separated by commas, got \"%s\"",
                 field, max, text);
        out[n++] = (int)v;
        p = *end == ',' ? end + 1 : end;
    }
    if (n == 0) fail("configuration: %s is empty", field);
    return n;
}

// A comma-separated list of exactly n numbers.
static void config_parse_double_list(const char* text, double* out, int n, const char* field) {
    const char* p = text;
    for (int i = 0; i < n; i++) {
        char* end;
        double v = strtod(p, &end);
        if (end == p || !isfinite(v) || (i + 1 < n && *end != ',') || (i + 1 == n && *end))
            fail("configuration: %s must be %d finite numbers separated by commas (one per channel), got \"%s\"",
                 field, n, text);
        out[i] = v;
        p = end + 1;
    }
}

#endif
