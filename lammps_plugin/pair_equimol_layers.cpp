/* pair_style equimol: the package's programs run layer by layer on a rank's graph, with the node features
   exchanged between ranks between two layers (see pair_equimol.h and equimol/pt2_lammps.py).

   The exchange moves rows of comm_width doubles per LAMMPS atom (atom_rows): forward communication copies
   an owned atom's row to its ghost images on other ranks (and on this rank, for periodic images); reverse
   communication adds a ghost's row to its owner's. */

#include "pair_equimol.h"

#include "atom.h"
#include "comm.h"

#include <ATen/ATen.h>
#include <torch/csrc/inductor/aoti_package/model_package_loader.h>

#include <cstring>

using namespace LAMMPS_NS;

/* Per-node energies [nlocal] and dE/dr_e [E, 3] of the rank's graph (model dtype and device). A rank without
   owned atoms runs no program but still takes part in every exchange: the programs want at least one owned
   atom, and LAMMPS's communication is collective. */

void PairEquimol::evaluate(std::vector<int64_t> &numbers, at::Tensor &node_energy, at::Tensor &gradient)
{
  const int nlocal = atom->nlocal;
  const int nnodes = static_cast<int>(numbers.size());
  const int64_t nedges = static_cast<int64_t>(graph.edge_atoms.size() / 2);
  const bool evaluates = nlocal > 0;
  const at::Device device = on_gpu ? at::Device(at::kCUDA, device_index) : at::Device(at::kCPU);
  const auto real = at::TensorOptions().dtype(double_precision ? at::kDouble : at::kFloat).device(device);
  const auto integer = at::TensorOptions().dtype(at::kLong).device(device);
  // from_blob views the buffers without copying; .to() copies only to another dtype or device
  at::Tensor edge_vectors = nedges ? at::from_blob(graph.vectors.data(), {nedges, 3}, at::kDouble).to(real)
                                   : at::zeros({0, 3}, real);
  at::Tensor edge_index = nedges ? at::from_blob(graph.edge_nodes.data(), {2, nedges}, at::kLong).to(integer)
                                 : at::zeros({2, 0}, integer);
  at::Tensor atomic_numbers = at::from_blob(numbers.data(), {nnodes}, at::kLong).to(integer);
  at::Tensor owned = at::empty({nlocal}, integer.dtype(at::kChar));
  const std::vector<at::Tensor> graph_inputs = {atomic_numbers, edge_vectors, edge_index, owned};
  auto with_features = [&](const at::Tensor &features) {
    std::vector<at::Tensor> inputs = {features};
    inputs.insert(inputs.end(), graph_inputs.begin(), graph_inputs.end());
    return inputs;
  };

  // forward: layer t maps h^(t) of every node to h^(t+1) of the owned atoms and their energy share
  node_energy = at::zeros({nlocal}, real);
  std::vector<std::vector<at::Tensor>> stage_inputs(layers - 1), stage_saved(layers - 1);
  at::Tensor features;
  for (int t = 0; t + 1 < layers; t++) {
    stage_inputs[t] = t == 0 ? graph_inputs : with_features(features);
    at::Tensor updated = at::zeros({0, feature_widths[t]}, real);
    if (evaluates) {
      std::vector<at::Tensor> outputs = layer_forward[t]->run(stage_inputs[t]);
      updated = outputs[0];
      node_energy = node_energy + outputs[1];
      stage_saved[t].assign(outputs.begin() + 2, outputs.end());
    }
    features = to_ghost_nodes(updated);
  }
  at::Tensor feature_gradient;
  gradient = at::zeros({nedges, 3}, real);
  if (evaluates) {
    std::vector<at::Tensor> outputs = model->run(layers == 1 ? graph_inputs : with_features(features));
    node_energy = node_energy + outputs[0];
    gradient = outputs[1];
    if (layers > 1) feature_gradient = outputs[2];
  } else if (layers > 1) {
    feature_gradient = at::zeros({nnodes, feature_widths[layers - 2]}, real);
  }
  // backward: dE/dh^(t+1) of the owned atoms (ghost nodes' shares returned to their owners) into layer t
  for (int t = layers - 2; t >= 0; t--) {
    at::Tensor cotangent = to_owned_atoms(feature_gradient);
    if (!evaluates) {
      if (t > 0) feature_gradient = at::zeros({nnodes, feature_widths[t - 1]}, real);
      continue;
    }
    std::vector<at::Tensor> inputs = stage_inputs[t];
    inputs.insert(inputs.end(), stage_saved[t].begin(), stage_saved[t].end());
    inputs.push_back(cotangent);
    std::vector<at::Tensor> outputs = layer_backward[t]->run(inputs);
    gradient = gradient + outputs[0];
    if (t > 0) feature_gradient = outputs[1];
  }
}

/* The features of the owned atoms, [nlocal, D] (model dtype and device), extended to every graph node:
   owned rows first, then each ghost node's row from its owner (forward communication). */

at::Tensor PairEquimol::to_ghost_nodes(const at::Tensor &owned_rows)
{
  const int nlocal = atom->nlocal;
  const int nnodes = static_cast<int>(graph.graph_atom.size());
  if (comm->nprocs == 1) return owned_rows;    // every ghost is an image of an owned atom: no ghost node
  comm_width = static_cast<int>(owned_rows.size(1));
  atom_rows.assign(static_cast<size_t>(atom->nmax) * comm_width, 0.0);
  if (nlocal > 0) {
    at::Tensor rows = owned_rows.to(at::kCPU, at::kDouble).contiguous();
    std::memcpy(atom_rows.data(), rows.data_ptr<double>(), sizeof(double) * nlocal * comm_width);
  }
  comm->forward_comm(this, comm_width);
  at::Tensor ghosts = at::empty({nnodes - nlocal, comm_width}, at::kDouble);
  double *ghost = ghosts.data_ptr<double>();
  for (int node = nlocal; node < nnodes; node++)
    std::memcpy(ghost + static_cast<size_t>(node - nlocal) * comm_width,
                atom_rows.data() + static_cast<size_t>(graph.graph_atom[node]) * comm_width,
                sizeof(double) * comm_width);
  return at::cat({owned_rows, ghosts.to(owned_rows.options())});
}

/* dE/dh of every graph node, [nnodes, D], summed onto the owned atoms, [nlocal, D]: the ghost nodes' rows
   return to their owners (reverse communication). */

at::Tensor PairEquimol::to_owned_atoms(const at::Tensor &node_rows)
{
  const int nlocal = atom->nlocal;
  const int nnodes = static_cast<int>(graph.graph_atom.size());
  if (comm->nprocs == 1) return node_rows;
  comm_width = static_cast<int>(node_rows.size(1));
  atom_rows.assign(static_cast<size_t>(atom->nmax) * comm_width, 0.0);
  at::Tensor rows = node_rows.to(at::kCPU, at::kDouble).contiguous();
  const double *row = rows.data_ptr<double>();
  for (int node = nlocal; node < nnodes; node++)
    std::memcpy(atom_rows.data() + static_cast<size_t>(graph.graph_atom[node]) * comm_width,
                row + static_cast<size_t>(node) * comm_width, sizeof(double) * comm_width);
  comm->reverse_comm(this, comm_width);
  at::Tensor owned = at::from_blob(atom_rows.data(), {nlocal, comm_width}, at::kDouble).to(node_rows.options());
  return node_rows.narrow(0, 0, nlocal) + owned;
}

int PairEquimol::pack_forward_comm(int n, int *list, double *buf, int, int *)
{
  int m = 0;
  for (int k = 0; k < n; k++)
    for (int c = 0; c < comm_width; c++) buf[m++] = atom_rows[static_cast<size_t>(list[k]) * comm_width + c];
  return m;
}

void PairEquimol::unpack_forward_comm(int n, int first, double *buf)
{
  int m = 0;
  for (int i = first; i < first + n; i++)
    for (int c = 0; c < comm_width; c++) atom_rows[static_cast<size_t>(i) * comm_width + c] = buf[m++];
}

int PairEquimol::pack_reverse_comm(int n, int first, double *buf)
{
  int m = 0;
  for (int i = first; i < first + n; i++)
    for (int c = 0; c < comm_width; c++) buf[m++] = atom_rows[static_cast<size_t>(i) * comm_width + c];
  return m;
}

void PairEquimol::unpack_reverse_comm(int n, int *list, double *buf)
{
  int m = 0;
  for (int k = 0; k < n; k++)
    for (int c = 0; c < comm_width; c++) atom_rows[static_cast<size_t>(list[k]) * comm_width + c] += buf[m++];
}
