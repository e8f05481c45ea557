/* vtool run's sandbox (sandbox.h). */
#include "vmm/sandbox.h"

void sandbox_thread(enum sandbox_class c)
{
	(void)c;
}
