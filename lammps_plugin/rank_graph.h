/* The graph one rank of pair_style equimol hands to the model (see rank_graph.cpp for how it is built).

   Nodes: the owned atoms first (node i = atom i), then one node per other atom ID among the ghosts that
   are neighbours of owned atoms. Edges: sender -> receiver pairs within the cutoff, every receiver owned. */

#ifndef LMP_EQUIMOL_RANK_GRAPH_H
#define LMP_EQUIMOL_RANK_GRAPH_H

#include <cstdint>
#include <vector>

namespace LAMMPS_NS {

class Atom;
class NeighList;

class RankGraph {
 public:
  // Build from the owned and ghost atoms and a full neighbour list of the owned atoms; cutoff in Å.
  // Returns the number of graph nodes.
  int build(Atom *atom, NeighList *list, double cutoff);

  std::vector<int> graph_atom;             // a LAMMPS atom of each graph node (owned: itself; ghost: one image)
  std::vector<int> edge_atoms;             // [E, 2]: (sender atom, receiver atom), LAMMPS indices
  std::vector<int64_t> edge_nodes;         // [2, E]: senders then receivers, graph node indices
  std::vector<double> vectors;             // [E, 3]: x_receiver - x_sender (Å)
};

}    // namespace LAMMPS_NS

#endif
