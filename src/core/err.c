#include "err.h"

static const char *const texts[] = {
#define CSM_ERR_TEXT(code, text) text,
    CSM_ERRORS(CSM_ERR_TEXT)
#undef CSM_ERR_TEXT
};

const char *csm_strerror(int code)
{
    if (code < 0 || code >= CSM_NCODES)
        return "unknown error";
    return texts[code];
}
