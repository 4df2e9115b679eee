/* err.h - project error codes and error-message helpers.
 *
 * Every fallible function returns 0 or one of the negative MESH_E* codes below.
 * Functions that parse untrusted input also take a caller-owned message buffer
 * (char *err, size_t err_cap) and fill it once, where the context is known,
 * with words a user can act on. err_str() gives the generic text of a code.
 */
#ifndef MESH_CORE_ERR_H
#define MESH_CORE_ERR_H

#include <stddef.h>

enum {
    MESH_OK = 0,
    MESH_ENOMEM = -1,      /* out of memory */
    MESH_EIO = -2,         /* read/write/open failed (errno mapped) */
    MESH_EINVAL = -3,      /* bad argument from the caller or the user */
    MESH_EBADMODEL = -4,   /* model file corrupt or not understood */
    MESH_EPROTO = -5,      /* peer or wire data violates the protocol */
    MESH_ERANGE = -6,      /* value or buffer out of range / too small */
    MESH_EUNSUPPORTED = -7,/* valid but not supported (arch, type, feature) */
    MESH_ENOTFOUND = -8,   /* key, tensor, file or peer not found */
    MESH_ECRYPTO = -9,     /* authentication or signature failure */
    MESH_ETIMEOUT = -10,   /* deadline passed */
    MESH_ECLOSED = -11,    /* stream or connection closed */
    MESH_EAGAIN = -12,     /* try again later (would block, queue full) */
    MESH_EFULL = -13,      /* context, queue or table full */
    MESH_ECANCELED = -14,  /* operation cancelled */
};

/* Generic text of an error code ("out of memory"); never NULL. */
const char *err_str(int code);

/* Formats a message into err (if err != NULL and err_cap > 0) and returns code.
 * Lets callers write: return err_set(err, err_cap, MESH_EBADMODEL, "tensor %s: ...", n); */
int err_set(char *err, size_t err_cap, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Maps an errno value to a MESH_E* code. */
int err_from_errno(int errnum);

#endif
