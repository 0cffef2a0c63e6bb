/* A plain C interface to a TorchScript classifier exported by sim2real_fast (models/<method>.pt).
 *
 * The library (libs2r_infer.so, built by the Makefile next to this file) links libtorch; callers such as
 * ROOT macros see only these functions, so no torch header or C++ type crosses the boundary. Everything
 * runs on the CPU. Errors come back as one line in a caller-provided buffer, never as an exception.
 */
#ifndef S2R_INFER_H
#define S2R_INFER_H

#ifdef __cplusplus
extern "C" {
#endif

typedef struct s2r_model s2r_model;

/* Loads the TorchScript file `path` and checks that it maps a (2, n_cells) float32 batch to a
 * (2, n_classes) float32 one: returns the model and sets *n_classes, or returns NULL and writes a
 * one-line message naming the file to `error` (error_size bytes). */
s2r_model *s2r_load(const char *path, long long n_cells, long long *n_classes, char *error, unsigned long error_size);

/* outputs (n, n_classes) class probabilities from inputs (n, n_cells) cell energies in MeV, both
 * row-major float32 owned by the caller: returns 0, or -1 with a one-line message in `error`. */
int s2r_run(s2r_model *model, const float *inputs, long long n, float *outputs, char *error,
            unsigned long error_size);

/* Frees a model from s2r_load (NULL is allowed). */
void s2r_free(s2r_model *model);

typedef s2r_model *(*s2r_load_fn)(const char *, long long, long long *, char *, unsigned long);
typedef int (*s2r_run_fn)(s2r_model *, const float *, long long, float *, char *, unsigned long);
typedef void (*s2r_free_fn)(s2r_model *);

#ifdef __cplusplus
}
#endif

#endif
