/* The graph one rank of pair_style equimol hands to the model (see rank_graph.cpp for how it is built).

   Nodes: the owned atoms first (node i = atom i), then one node per other atom ID among the ghosts.
   Edges: sender -> receiver pairs within the cutoff, sorted by the receiver's hop from the owned atoms;
   edges_within[h] edges lead into nodes at most h hops away (a prefix of the edge list). */

#ifndef LMP_EQUIMOL_RANK_GRAPH_H
#define LMP_EQUIMOL_RANK_GRAPH_H

#include <cstdint>
#include <vector>

namespace LAMMPS_NS {

class Atom;
class Domain;
class NeighList;

class RankGraph {
 public:
  // Build from the owned and ghost atoms and a full neighbour list that includes ghosts; cutoff in Å.
  // Returns the number of graph nodes.
  int build(Atom *atom, Domain *domain, NeighList *list, double cutoff, int receptive_hops);

  std::vector<int> graph_atom;             // the representative atom of each graph node
  std::vector<int> edge_atoms;             // [E, 2]: (sender atom, receiver atom), LAMMPS indices
  std::vector<int64_t> edge_nodes;         // [2, E]: senders then receivers, graph node indices
  std::vector<double> vectors;             // [E, 3]: x_receiver - x_sender (Å)
  std::vector<int64_t> edges_within;       // [receptive_hops]: edges into nodes at most h hops away

 private:
  // reused between builds
  std::vector<int> node_of_atom;           // node of each owned/ghost atom
  std::vector<int> representative;         // the atom whose neighbours are a node's incoming edges
  std::vector<double> distance;            // how far each node's representative is from the sub-domain
  std::vector<int> hop;                    // edges from the nearest owned atom
};

}    // namespace LAMMPS_NS

#endif
