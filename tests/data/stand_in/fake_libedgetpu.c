/* STAND-IN for Coral's libedgetpu.so.1 (tests only): the C enumeration/version API of
 * tflite/public/edgetpu_c.h with a device list set by the environment, and the external-delegate entry points
 * returning no delegate, which is what the real library does when no (matching) Edge TPU can be opened. */
#include <stdlib.h>
#include <string.h>

enum edgetpu_device_type { EDGETPU_APEX_PCI = 0, EDGETPU_APEX_USB = 1 };
struct edgetpu_device { enum edgetpu_device_type type; const char* path; };

static struct edgetpu_device devices[2] = {{EDGETPU_APEX_USB, "/sys/bus/usb/devices/2-1"}, {EDGETPU_APEX_PCI, "/dev/apex_0"}};

struct edgetpu_device* edgetpu_list_devices(size_t* num_devices) {
  const char* n = getenv("FAKE_EDGETPU_DEVICES");
  *num_devices = n ? (size_t)atoi(n) : 0;
  if (*num_devices > 2) *num_devices = 2;
  return *num_devices ? devices : NULL;
}

void edgetpu_free_devices(struct edgetpu_device* dev) { (void)dev; }

const char* edgetpu_version(void) { return "BuildLabel(COMPILER=stand-in,DATE=redacted), RuntimeVersion(13)"; }

typedef void (*error_reporter)(const char*);

void* tflite_plugin_create_delegate(char** keys, char** values, size_t num, error_reporter report) {
  (void)keys; (void)values; (void)num;
  if (report) report("stand-in: no Edge TPU can be opened");
  return NULL;
}

void tflite_plugin_destroy_delegate(void* delegate) { (void)delegate; }
