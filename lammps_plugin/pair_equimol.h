/* pair_style equimol: an equimol potential (an AOTInductor package written by
   `equimol export MODEL OUT.pt2 --format aotinductor --target lammps`) as a LAMMPS pair style, loaded as a plugin.

   Each rank evaluates the model layer by layer for its owned atoms only: between two layers the node
   features of owned atoms go to their ghost images (forward communication), and in the backward pass the
   derivatives with respect to ghost features return to their owners (reverse communication). Ghosts are
   needed one cutoff deep (LAMMPS's default ghost cutoff); the periodic images of one atom are one graph
   node; forces on ghosts return by reverse communication (newton on). See equimol/pt2_lammps.py for the
   package's programs. */

#ifdef PAIR_CLASS
// clang-format off
PairStyle(equimol,PairEquimol);
// clang-format on
#else

#ifndef LMP_PAIR_EQUIMOL_H
#define LMP_PAIR_EQUIMOL_H

#include "pair.h"
#include "rank_graph.h"

#include <ATen/Tensor.h>

#include <memory>
#include <string>
#include <vector>

namespace torch::inductor {
class AOTIModelPackageLoader;
}

namespace LAMMPS_NS {

class PairEquimol : public Pair {
 public:
  PairEquimol(class LAMMPS *);
  ~PairEquimol() override;
  void compute(int, int) override;
  void settings(int, char **) override;
  void coeff(int, char **) override;
  void init_style() override;
  double init_one(int, int) override;
  int pack_forward_comm(int, int *, double *, int, int *) override;
  void unpack_forward_comm(int, int, double *) override;
  int pack_reverse_comm(int, int, double *) override;
  void unpack_reverse_comm(int, int *, double *) override;

 private:
  // the model file and what its metadata says
  std::string model_path;
  std::unique_ptr<torch::inductor::AOTIModelPackageLoader> model;    // the last layer
  std::vector<std::unique_ptr<torch::inductor::AOTIModelPackageLoader>> layer_forward, layer_backward;
  std::vector<int> species;                // atomic numbers the model knows
  std::vector<std::string> symbols;        // their chemical symbols
  std::vector<double> standard_masses;     // their standard atomic masses (amu)
  double cutoff;                           // Å
  int layers;                              // message-passing layers
  std::vector<int> feature_widths;         // D_1 .. D_{layers-1}: node features exchanged between layers
  bool double_precision;                   // float64 model (else float32)
  bool on_gpu;                             // compiled for and running on CUDA
  int device_index;                        // the CUDA device of this rank
  bool check_masses;                       // compare LAMMPS masses with the elements' (pair_style ... masses no)

  std::vector<int> type_number;            // atomic number of each LAMMPS type (index = type)

  RankGraph graph;                         // the graph of one evaluation (reused buffers)
  std::vector<double> atom_rows;           // [nall, comm_width]: per-atom rows that LAMMPS communicates
  int comm_width;                          // the width of the rows being communicated

  void read_metadata();
  void allocate();
  void evaluate(std::vector<int64_t> &numbers, at::Tensor &node_energy, at::Tensor &gradient);
  at::Tensor to_ghost_nodes(const at::Tensor &owned_rows);
  at::Tensor to_owned_atoms(const at::Tensor &node_rows);
};

}    // namespace LAMMPS_NS

#endif
#endif
