/* The graph of one rank of pair_style equimol (RankGraph::build):
   - nodes: the owned atoms (node i = atom i), then one node per other atom ID among the ghosts that send
     to an owned atom; the periodic images of an atom share its node, since they carry the same features;
   - edges: for each owned atom, its neighbours within the cutoff (the full list of the owned atoms);
     every receiver is owned, so a rank computes each layer for its own atoms only, and the features of
     the ghost nodes come from their owners between layers (pair_equimol.cpp). */

#include "rank_graph.h"

#include "atom.h"
#include "neigh_list.h"
#include "neighbor.h"

#include <unordered_map>

using namespace LAMMPS_NS;

int RankGraph::build(Atom *atom, NeighList *list, double cutoff)
{
  const int nlocal = atom->nlocal;
  const tagint *tag = atom->tag;
  double **x = atom->x;
  const double cutoff_squared = cutoff * cutoff;

  std::unordered_map<tagint, int> node_of_tag;
  node_of_tag.reserve(2 * static_cast<size_t>(nlocal));
  graph_atom.resize(nlocal);
  for (int i = 0; i < nlocal; i++) {
    graph_atom[i] = i;
    node_of_tag[tag[i]] = i;
  }
  std::vector<int64_t> senders, receivers;
  edge_atoms.clear();
  vectors.clear();
  for (int ii = 0; ii < list->inum; ii++) {
    const int i = list->ilist[ii];
    const int *neighbours = list->firstneigh[i];
    for (int jj = 0; jj < list->numneigh[i]; jj++) {
      const int j = neighbours[jj] & NEIGHMASK;
      const double r[3] = {x[i][0] - x[j][0], x[i][1] - x[j][1], x[i][2] - x[j][2]};
      if (r[0] * r[0] + r[1] * r[1] + r[2] * r[2] >= cutoff_squared) continue;
      auto found = node_of_tag.emplace(tag[j], static_cast<int>(graph_atom.size()));
      if (found.second) graph_atom.push_back(j);
      senders.push_back(found.first->second);
      receivers.push_back(i);
      edge_atoms.push_back(j);
      edge_atoms.push_back(i);
      vectors.insert(vectors.end(), r, r + 3);
    }
  }
  edge_nodes.assign(senders.begin(), senders.end());
  edge_nodes.insert(edge_nodes.end(), receivers.begin(), receivers.end());
  return static_cast<int>(graph_atom.size());
}
