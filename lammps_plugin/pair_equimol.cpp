/* pair_style equimol: see pair_equimol.h and equimol/pt2_lammps.py.

   Each evaluation builds the rank's graph (RankGraph, rank_graph.cpp) and runs the package's programs on
   it, layer by layer, exchanging node features with the other ranks in between; the backward programs
   return dE_local/dr_e for every edge e (r_e = x_receiver - x_sender in LAMMPS coordinates), from which
   forces, the virial and per-atom virials follow. */

#include "pair_equimol.h"

#include "atom.h"
#include "comm.h"
#include "error.h"
#include "force.h"
#include "memory.h"
#include "neigh_list.h"
#include "neighbor.h"
#include "update.h"

#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>
#include <torch/csrc/inductor/aoti_package/model_package_loader.h>
#include <torch/cuda.h>

#include <cmath>
#include <cstring>
#include <exception>
#include <limits>
#include <sstream>
#include <unordered_map>

using namespace LAMMPS_NS;

namespace {

const char *const USAGE =
    "pair_style equimol MODEL.pt2 [device cpu|cuda] [dtype float32|float64] [masses yes|no]";
const char *const EXPORT_HINT = "write one with `equimol export MODEL OUT.pt2 --format aotinductor --target lammps`";
const char *const LAMMPS_FORMAT = "2";    // equimol.pt2_lammps.LAMMPS_FORMAT
const double MASS_TOLERANCE = 0.05;    // relative; as equimol.lammps: a swapped map misses it by far

std::vector<std::string> split(const std::string &text, char separator)
{
  std::vector<std::string> parts;
  std::stringstream stream(text);
  std::string part;
  while (std::getline(stream, part, separator)) parts.push_back(part);
  return parts;
}

std::string listing(const std::vector<std::string> &names)
{
  std::string text = "[";
  for (size_t k = 0; k < names.size(); k++) text += (k ? ", " : "") + names[k];
  return text + "]";
}

std::string one_line(const std::exception &error)
{
  std::string text = error.what();
  size_t end = text.find('\n');
  return end == std::string::npos ? text : text.substr(0, end);
}

}    // namespace

PairEquimol::PairEquimol(LAMMPS *lmp) :
    Pair(lmp), cutoff(0.0), layers(0), double_precision(true), on_gpu(false), device_index(-1),
    check_masses(true), comm_width(0)
{
  single_enable = 0;
  restartinfo = 0;
  one_coeff = 1;
  manybody_flag = 1;
  no_virial_fdotr_compute = 1;     // the virial is summed from the edges
  centroidstressflag = CENTROID_NOTAVAIL;
}

PairEquimol::~PairEquimol()
{
  if (allocated) {
    memory->destroy(setflag);
    memory->destroy(cutsq);
  }
}

void PairEquimol::allocate()
{
  allocated = 1;
  const int n = atom->ntypes + 1;
  memory->create(setflag, n, n, "pair:setflag");
  memory->create(cutsq, n, n, "pair:cutsq");
  for (int i = 0; i < n; i++)
    for (int j = 0; j < n; j++) setflag[i][j] = 0;
  type_number.assign(n, 0);
}

/* pair_style equimol MODEL.pt2 [device cpu|cuda] [dtype float32|float64] [masses yes|no] */

void PairEquimol::settings(int narg, char **arg)
{
  if (narg < 1 || narg % 2 == 0) error->all(FLERR, std::string("Illegal pair_style command; expected ") + USAGE);
  if (strcmp(update->unit_style, "metal") != 0)
    error->all(FLERR,
               std::string("pair_style equimol needs 'units metal' (eV, Angstrom, ps); this input has 'units ") +
                   update->unit_style + "'");
  model_path = arg[0];
  if (allocated)    // a new model (maybe other species): its type map comes from a new pair_coeff
    for (int i = 0; i <= atom->ntypes; i++)
      for (int j = 0; j <= atom->ntypes; j++) setflag[i][j] = 0;
  std::string device_request, dtype_request;
  for (int k = 1; k < narg; k += 2) {
    const std::string key = arg[k], value = arg[k + 1];
    if (key == "device" && (value == "cpu" || value == "cuda"))
      device_request = value;
    else if (key == "dtype" && (value == "float32" || value == "float64"))
      dtype_request = value;
    else if (key == "masses" && (value == "yes" || value == "no"))
      check_masses = value == "yes";
    else
      error->all(FLERR, "pair_style equimol: unknown keyword or value '" + key + " " + value + "'; expected " + USAGE);
  }
  if (!platform::file_is_readable(model_path))
    error->all(FLERR, "pair_style equimol: model file '" + model_path + "' does not exist or cannot be read");

  read_metadata();
  const std::string dtype = double_precision ? "float64" : "float32";
  const std::string device = on_gpu ? "cuda" : "cpu";
  if (!dtype_request.empty() && dtype_request != dtype)
    error->all(FLERR, "pair_style equimol: " + model_path + " was compiled for " + dtype + ", not " + dtype_request +
                          "; compile the model in " + dtype_request + " (equimol export ... --dtype " +
                          dtype_request + ") or drop the dtype keyword");
  if (!device_request.empty() && device_request != device)
    error->all(FLERR, "pair_style equimol: " + model_path + " was compiled for " + device + ", not " +
                          device_request + "; compile it for " + device_request + " (equimol export ... --device " +
                          device_request + ")");
  if (on_gpu && !torch::cuda::is_available())
    error->all(FLERR, "pair_style equimol: " + model_path +
                          " was compiled for cuda, but torch sees no CUDA device here; compile it for cpu");

  c10::DeviceIndex index = -1;
  if (on_gpu) {    // one GPU per rank, round robin over the ranks of a node
    MPI_Comm node;
    int local_rank = 0;
    MPI_Comm_split_type(world, MPI_COMM_TYPE_SHARED, comm->me, MPI_INFO_NULL, &node);
    MPI_Comm_rank(node, &local_rank);
    MPI_Comm_free(&node);
    index = static_cast<c10::DeviceIndex>(local_rank % static_cast<int>(torch::cuda::device_count()));
  }
  device_index = index;
  std::string failure;
  try {
    auto load = [&](const std::string &name) {
      return std::make_unique<torch::inductor::AOTIModelPackageLoader>(model_path, name, false, 1, index);
    };
    model = load("model");
    layer_forward.clear();
    layer_backward.clear();
    for (int t = 0; t + 1 < layers; t++) {
      layer_forward.push_back(load("layer" + std::to_string(t) + "_forward"));
      layer_backward.push_back(load("layer" + std::to_string(t) + "_backward"));
    }
  } catch (const std::exception &exception) {
    failure = one_line(exception);
  }
  if (!failure.empty())
    error->all(FLERR, "pair_style equimol: cannot load " + model_path + " (" + failure + "); " + EXPORT_HINT);
}

/* The package's metadata (equimol.pt2_lammps.plugin_metadata), checked before loading its code. */

void PairEquimol::read_metadata()
{
  std::unordered_map<std::string, std::string> metadata;
  std::string failure;
  try {
    metadata = torch::inductor::AOTIModelPackageLoader::load_metadata_from_package(model_path, "model");
  } catch (const std::exception &exception) {
    failure = one_line(exception);
  }
  if (!failure.empty())
    error->all(FLERR, "pair_style equimol: " + model_path + " is not an AOTInductor package (" + failure + "); " +
                          EXPORT_HINT);
  const char *keys[] = {"equimol_target", "equimol_lammps_format", "equimol_species", "equimol_symbols",
                        "equimol_masses", "equimol_cutoff", "equimol_layers", "equimol_feature_widths",
                        "equimol_dtype", "equimol_device", "equimol_threads"};
  for (const char *key : keys)
    if (metadata.find(key) == metadata.end()) {
      const std::string kind = metadata.count("equimol_target") ? "a package of another equimol version (no " +
              std::string(key) + ")" : "not a pair_style equimol package";
      error->all(FLERR, "pair_style equimol: " + model_path + " is " + kind + "; " + EXPORT_HINT);
    }
  if (metadata["equimol_target"] != "lammps")
    error->all(FLERR, "pair_style equimol: " + model_path + " was compiled for target '" +
                          metadata["equimol_target"] + "', not 'lammps'; " + EXPORT_HINT);
  if (metadata["equimol_lammps_format"] != LAMMPS_FORMAT)
    error->all(FLERR, "pair_style equimol: " + model_path + " has package format " +
                          metadata["equimol_lammps_format"] + "; this plugin reads format " + LAMMPS_FORMAT +
                          ": compile the model again with this equimol, or build the plugin of its equimol");
  species.clear();
  for (const std::string &number : split(metadata["equimol_species"], ','))
    species.push_back(utils::inumeric(FLERR, number, false, lmp));
  symbols = split(metadata["equimol_symbols"], ',');
  standard_masses.clear();
  for (const std::string &mass : split(metadata["equimol_masses"], ','))
    standard_masses.push_back(utils::numeric(FLERR, mass, false, lmp));
  if (symbols.size() != species.size() || standard_masses.size() != species.size())
    error->all(FLERR, "pair_style equimol: " + model_path + " has inconsistent species metadata; " + EXPORT_HINT);
  cutoff = utils::numeric(FLERR, metadata["equimol_cutoff"], false, lmp);
  layers = utils::inumeric(FLERR, metadata["equimol_layers"], false, lmp);
  feature_widths.clear();
  for (const std::string &width : split(metadata["equimol_feature_widths"], ','))
    feature_widths.push_back(utils::inumeric(FLERR, width, false, lmp));
  if (layers < 1 || static_cast<int>(feature_widths.size()) != layers - 1)
    error->all(FLERR, "pair_style equimol: " + model_path + " has inconsistent layer metadata; " + EXPORT_HINT);
  // the widest rows exchanged between layers: LAMMPS sizes its communication buffers from these
  comm_forward = comm_reverse = 0;
  for (const int width : feature_widths) comm_forward = comm_reverse = std::max(comm_forward, width);
  const std::string dtype = metadata["equimol_dtype"], device = metadata["equimol_device"];
  if (dtype != "float32" && dtype != "float64")
    error->all(FLERR, "pair_style equimol: " + model_path + " has dtype '" + dtype + "'; float32 or float64 only");
  if (device != "cpu" && device != "cuda")
    error->all(FLERR, "pair_style equimol: " + model_path + " was compiled for device '" + device +
                          "'; cpu or cuda only");
  double_precision = dtype == "float64";
  on_gpu = device == "cuda";
  // the operators that AOTInductor leaves to ATen use torch's thread pool: as many threads as the package's
  // own kernels were compiled for
  at::set_num_threads(std::max(1, utils::inumeric(FLERR, metadata["equimol_threads"], false, lmp)));
}

/* pair_coeff * * El1 El2 ... : the element of each atom type, type 1 first */

void PairEquimol::coeff(int narg, char **arg)
{
  if (!allocated) allocate();
  const int ntypes = atom->ntypes;
  if (narg < 2 || strcmp(arg[0], "*") != 0 || strcmp(arg[1], "*") != 0)
    error->all(FLERR, "pair_style equimol needs 'pair_coeff * * El1 El2 ...' (one element per atom type)");
  std::vector<std::string> named(arg + 2, arg + narg);
  if (narg - 2 != ntypes)
    error->all(FLERR, "pair_coeff * * names " + std::to_string(narg - 2) + " element(s) " + listing(named) +
                          " but the LAMMPS box has " + std::to_string(ntypes) + " atom types");
  for (int type = 1; type <= ntypes; type++) {
    int found = -1;
    for (size_t k = 0; k < symbols.size(); k++)
      if (symbols[k] == named[type - 1]) found = static_cast<int>(k);
    if (found < 0)
      error->all(FLERR, "pair_coeff * * " + listing(named) + ": '" + named[type - 1] +
                            "' is not among the model's species " + listing(symbols));
    type_number[type] = found;    // index into species/symbols/standard_masses
  }
  for (int i = 1; i <= ntypes; i++)
    for (int j = i; j <= ntypes; j++) setflag[i][j] = 1;
}

void PairEquimol::init_style()
{
  if (strcmp(update->unit_style, "metal") != 0)
    error->all(FLERR, std::string("pair_style equimol needs 'units metal'; this input has 'units ") +
                          update->unit_style + "'");
  if (force->newton_pair == 0)
    error->all(FLERR, "pair_style equimol needs 'newton on': forces on ghost atoms return to their owners by "
                      "reverse communication");
  if (atom->tag_enable == 0) error->all(FLERR, "pair_style equimol needs atom IDs");
  if (comm->mode != Comm::SINGLE)
    error->all(FLERR, "pair_style equimol needs 'comm_modify mode single' (one ghost cutoff)");
  if (check_masses) {
    for (int type = 1; type <= atom->ntypes; type++) {
      const int k = type_number[type];
      const double expected = standard_masses[k];
      const double mass = atom->mass ? atom->mass[type] : std::numeric_limits<double>::quiet_NaN();
      if (!(std::fabs(mass - expected) <= MASS_TOLERANCE * expected))
        error->all(FLERR, "LAMMPS type " + std::to_string(type) + " has mass " + fmt::format("{:g}", mass) +
                              " but pair_coeff maps it to " + symbols[k] + " (" + fmt::format("{:g}", expected) +
                              "); fix the element order in pair_coeff (or add 'masses no' to pair_style for "
                              "isotopes)");
    }
  }
  // full lists of the owned atoms; the default ghost cutoff (cutoff + skin) holds every sender, since
  // features of ghosts come from their owners between layers instead of being recomputed here
  neighbor->add_request(this, NeighConst::REQ_FULL);
}

double PairEquimol::init_one(int i, int j)
{
  return cutoff;
}

void PairEquimol::compute(int eflag, int vflag)
{
  ev_init(eflag, vflag);
  const int nlocal = atom->nlocal;
  const int nnodes = graph.build(atom, list, cutoff);
  const int64_t nedges = static_cast<int64_t>(graph.edge_atoms.size() / 2);
  std::vector<int64_t> numbers(nnodes);
  const int *type = atom->type;
  for (int node = 0; node < nnodes; node++) numbers[node] = species[type_number[type[graph.graph_atom[node]]]];

  at::Tensor node_energy, gradient;
  std::string failure;
  try {
    c10::InferenceMode guard;
    evaluate(numbers, node_energy, gradient);
    node_energy = node_energy.to(at::kCPU, at::kDouble).contiguous();
    gradient = gradient.to(at::kCPU, at::kDouble).contiguous();
  } catch (const std::exception &exception) {
    failure = one_line(exception);
  }
  if (!failure.empty()) error->one(FLERR, "pair_style equimol: evaluating " + model_path + " failed: " + failure);
  if (nlocal == 0) return;

  const double *energy = node_energy.data_ptr<double>();
  for (int i = 0; i < nlocal; i++) {
    if (eflag_global) eng_vdwl += energy[i];
    if (eflag_atom) eatom[i] += energy[i];
  }
  double **f = atom->f;
  const double *g = gradient.data_ptr<double>();
  for (int64_t e = 0; e < nedges; e++) {
    const int sender = graph.edge_atoms[2 * e], receiver = graph.edge_atoms[2 * e + 1];
    const double *ge = g + 3 * e;
    for (int k = 0; k < 3; k++) {
      f[receiver][k] -= ge[k];
      f[sender][k] += ge[k];
    }
    if (!vflag_either) continue;
    // -r_e (x) g_e, symmetrised, in LAMMPS order xx yy zz xy xz yz
    const double *r = graph.vectors.data() + 3 * e;
    const double v[6] = {-r[0] * ge[0],
                         -r[1] * ge[1],
                         -r[2] * ge[2],
                         -0.5 * (r[0] * ge[1] + r[1] * ge[0]),
                         -0.5 * (r[0] * ge[2] + r[2] * ge[0]),
                         -0.5 * (r[1] * ge[2] + r[2] * ge[1])};
    if (vflag_global)
      for (int k = 0; k < 6; k++) virial[k] += v[k];
    if (vflag_atom)
      for (int k = 0; k < 6; k++) {
        vatom[sender][k] += 0.5 * v[k];
        vatom[receiver][k] += 0.5 * v[k];
      }
  }
}
