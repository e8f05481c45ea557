/* tguest disk drivers: filled in below. */
#include "rt.h"

void test_disk(void);
void test_disk(void)
{
	fail("disk", "not built yet");
}
