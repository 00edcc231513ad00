/* LD_PRELOAD shim: time() returns the real time shifted by $VDPH_TIME_SHIFT seconds.
 *
 * Why: libnl seeds the netlink port ids it hands out from time(); libvirt 9.0 refuses to talk to
 * lldpad when its event socket got a port id >= 2^31.  Shifting time() by a few hundred seconds
 * moves the seed, so the lab can restart libvirtd until the port id is usable.  Only time() is
 * shifted; clock_gettime() (timestamps, timers) stays real.  Compiled at capture time, never
 * committed as a binary.
 */
#define _GNU_SOURCE
#include <stdlib.h>
#include <time.h>

time_t time(time_t *out)
{
    static long shift;
    static int loaded;
    struct timespec now;
    time_t value;

    if (!loaded) {
        const char *env = getenv("VDPH_TIME_SHIFT");
        shift = env ? strtol(env, NULL, 10) : 0;
        loaded = 1;
    }
    clock_gettime(CLOCK_REALTIME, &now);
    value = now.tv_sec + shift;
    if (out)
        *out = value;
    return value;
}
