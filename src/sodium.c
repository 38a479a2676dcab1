/* placeholder: filled in by the sodium binding */
#include "private.h"

void csm_open_sodium(lua_State *L)
{
    (void)L;
}
