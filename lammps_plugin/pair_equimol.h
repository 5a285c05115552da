/* pair_style equimol: an equimol potential (an AOTInductor package written by
   `equimol export MODEL OUT.pt2 --format aotinductor --target lammps`) as a LAMMPS pair style, loaded as a plugin.

   Each rank evaluates its owned atoms plus the ghost atoms within the model's receptive field
   (receptive_hops x cutoff + skin, set as the ghost cutoff); the periodic images of one atom are one
   graph node; energies count owned atoms only; forces on ghosts return by reverse communication
   (newton on). See equimol/pt2_lammps.py for the package's inputs and outputs. */

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

 private:
  // the model file and what its metadata says
  std::string model_path;
  std::unique_ptr<torch::inductor::AOTIModelPackageLoader> model;
  std::vector<int> species;                // atomic numbers the model knows
  std::vector<std::string> symbols;        // their chemical symbols
  std::vector<double> standard_masses;     // their standard atomic masses (amu)
  double cutoff;                           // Å
  int receptive_hops;                      // message-passing layers: edges a node's energy reaches
  bool double_precision;                   // float64 model (else float32)
  bool on_gpu;                             // compiled for and running on CUDA
  int device_index;                        // the CUDA device of this rank
  bool check_masses;                       // compare LAMMPS masses with the elements' (pair_style ... masses no)

  std::vector<int> type_number;            // atomic number of each LAMMPS type (index = type)

  RankGraph graph;                         // the graph of one evaluation (reused buffers)

  void read_metadata();
  void allocate();
};

}    // namespace LAMMPS_NS

#endif
#endif
