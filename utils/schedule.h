// Learning-rate schedules, as a function of the update index (0-based).
//   cosine (nanoGPT): linear warmup lr*(step+1)/(warmup+1) for step < warmup, then a
//     half cosine from lr down to min_lr at step total; min_lr after that.
//   inverse_sqrt (fairseq): linear warmup from init_lr to lr over warmup updates,
//     then lr * sqrt(warmup / step).
//   constant: lr.
#ifndef UTILS_SCHEDULE_H
#define UTILS_SCHEDULE_H

#include <math.h>
#include <string.h>

typedef enum { SCHEDULE_COSINE, SCHEDULE_INVERSE_SQRT, SCHEDULE_CONSTANT } ScheduleKind;

typedef struct {
    ScheduleKind kind;
    double lr, min_lr, init_lr;
    long warmup, total;
} Schedule;

// Kind for "cosine", "inverse_sqrt" or "constant"; -1 for any other name.
static int schedule_kind_from_name(const char* name) {
    if (strcmp(name, "cosine") == 0) return SCHEDULE_COSINE;
    if (strcmp(name, "inverse_sqrt") == 0) return SCHEDULE_INVERSE_SQRT;
    if (strcmp(name, "constant") == 0) return SCHEDULE_CONSTANT;
    return -1;
}

static double schedule_lr(const Schedule* s, long step) {
    switch (s->kind) {
    case SCHEDULE_COSINE: {
        if (step < s->warmup) return s->lr * (step + 1) / (s->warmup + 1);
        if (step >= s->total || s->total <= s->warmup) return s->min_lr;
        double ratio = (double)(step - s->warmup) / (double)(s->total - s->warmup);
        return s->min_lr + 0.5 * (1.0 + cos(M_PI * ratio)) * (s->lr - s->min_lr);
    }
    case SCHEDULE_INVERSE_SQRT:
        if (step < s->warmup) return s->init_lr + step * (s->lr - s->init_lr) / s->warmup;
        return s->lr * sqrt((double)(s->warmup > 0 ? s->warmup : 1) / (double)(step > 0 ? step : 1));
    case SCHEDULE_CONSTANT:
        return s->lr;
    }
    return s->lr;
}

#endif
