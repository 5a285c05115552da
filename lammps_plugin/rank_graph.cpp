/* The graph of one rank of pair_style equimol (RankGraph::build):
   - nodes: the owned atoms (node i = atom i), then one node per other atom ID among the ghosts; the
     periodic images of an atom share its node, since they carry the same features;
   - each node's incoming edges are the neighbours within the cutoff of one representative atom: the
     owned atom, or the ghost image nearest the sub-domain (its neighbour list is the most complete);
   - only nodes fewer than receptive_hops edges from an owned atom receive edges: the others cannot
     change an owned atom's energy. The ghost cutoff (receptive_hops x cutoff + skin, init_style)
     makes the lists of all those representatives complete;
   - edges come sorted by their receiver's hop, and layer t + 1 takes only the edges into nodes fewer
     than receptive_hops - t hops away (a prefix): the last layer computes messages for owned atoms only. */

#include "rank_graph.h"

#include "atom.h"
#include "domain.h"
#include "neigh_list.h"
#include "neighbor.h"

#include <algorithm>
#include <climits>
#include <cmath>
#include <limits>
#include <unordered_map>

using namespace LAMMPS_NS;

namespace {

/* Distance (Å) of x outside this rank's sub-domain along the worst direction, in the metric of
   LAMMPS's ghost region (its lamda extent per unit length for a triclinic box); <= 0 inside. */

double outside_distance(Domain *domain, const double *x)
{
  double worst = -std::numeric_limits<double>::infinity();
  if (!domain->triclinic) {
    for (int k = 0; k < 3; k++)
      worst = std::max(worst, std::max(domain->sublo[k] - x[k], x[k] - domain->subhi[k]));
    return worst;
  }
  const double *h_inv = domain->h_inv;
  const double length[3] = {std::sqrt(h_inv[0] * h_inv[0] + h_inv[5] * h_inv[5] + h_inv[4] * h_inv[4]),
                            std::sqrt(h_inv[1] * h_inv[1] + h_inv[3] * h_inv[3]), h_inv[2]};
  double lamda[3];
  domain->x2lamda(const_cast<double *>(x), lamda);
  for (int k = 0; k < 3; k++)
    worst = std::max(worst, std::max(domain->sublo_lamda[k] - lamda[k], lamda[k] - domain->subhi_lamda[k]) /
                                length[k]);
  return worst;
}

}    // namespace

/* Fill edge_atoms, edge_nodes and vectors; return the number of graph nodes (owned atoms first). */

int RankGraph::build(Atom *atom, Domain *domain, NeighList *list, double cutoff, int receptive_hops)
{
  const int nlocal = atom->nlocal;
  const int nall = nlocal + atom->nghost;
  const tagint *tag = atom->tag;
  double **x = atom->x;
  const int *numneigh = list->numneigh;
  int **firstneigh = list->firstneigh;
  const double cutoff_squared = cutoff * cutoff;
  // visit(j, r) for each neighbour j of atom i within the cutoff, r = x_i - x_j
  auto for_neighbours = [&](int i, auto &&visit) {
    for (int jj = 0; jj < numneigh[i]; jj++) {
      const int j = firstneigh[i][jj] & NEIGHMASK;
      const double r[3] = {x[i][0] - x[j][0], x[i][1] - x[j][1], x[i][2] - x[j][2]};
      if (r[0] * r[0] + r[1] * r[1] + r[2] * r[2] < cutoff_squared) visit(j, r);
    }
  };

  node_of_atom.assign(nall, -1);
  representative.clear();
  distance.clear();
  std::unordered_map<tagint, int> node_of_tag;
  node_of_tag.reserve(nall);
  for (int i = 0; i < nlocal; i++) {
    node_of_atom[i] = i;
    node_of_tag[tag[i]] = i;
    representative.push_back(i);
    distance.push_back(-std::numeric_limits<double>::infinity());
  }
  for (int j = nlocal; j < nall; j++) {
    const double d = outside_distance(domain, x[j]);
    auto found = node_of_tag.find(tag[j]);
    if (found == node_of_tag.end()) {
      const int node = static_cast<int>(representative.size());
      node_of_tag.emplace(tag[j], node);
      representative.push_back(j);
      distance.push_back(d);
      node_of_atom[j] = node;
    } else {
      const int node = found->second;
      node_of_atom[j] = node;
      if (d < distance[node]) {
        distance[node] = d;
        representative[node] = j;
      }
    }
  }

  // hops from the owned atoms, breadth first, up to receptive_hops - 1
  const int nnodes = static_cast<int>(representative.size());
  hop.assign(nnodes, INT_MAX);
  std::vector<int> frontier, next;
  for (int i = 0; i < nlocal; i++) {
    hop[i] = 0;
    frontier.push_back(i);
  }
  for (int h = 0; h + 1 < receptive_hops; h++) {
    next.clear();
    for (const int node : frontier)
      for_neighbours(representative[node], [&](int j, const double *) {
        const int m = node_of_atom[j];
        if (hop[m] > h + 1) {
          hop[m] = h + 1;
          next.push_back(m);
        }
      });
    frontier.swap(next);
  }

  // edges into every node within receptive_hops - 1 hops, sorted by the receiver's hop (the layers after
  // the first take a prefix); graph nodes numbered as first met
  std::vector<std::vector<int>> by_hop(receptive_hops);
  for (int node = 0; node < nnodes; node++)
    if (hop[node] < receptive_hops) by_hop[hop[node]].push_back(node);
  std::vector<int> graph_index(nnodes, -1);
  for (int i = 0; i < nlocal; i++) graph_index[i] = i;
  int count = nlocal;
  std::vector<int64_t> senders, receivers;
  edge_atoms.clear();
  vectors.clear();
  edges_within.clear();
  graph_atom.assign(representative.begin(), representative.begin() + nlocal);
  auto number = [&](int node) {
    if (graph_index[node] < 0) {
      graph_index[node] = count++;
      graph_atom.push_back(representative[node]);
    }
    return graph_index[node];
  };
  for (int h = 0; h < receptive_hops; h++) {
    for (const int node : by_hop[h]) {
      const int i = representative[node];
      const int receiver = number(node);
      for_neighbours(i, [&](int j, const double *r) {
        senders.push_back(number(node_of_atom[j]));
        receivers.push_back(receiver);
        edge_atoms.push_back(j);
        edge_atoms.push_back(i);
        vectors.insert(vectors.end(), r, r + 3);
      });
    }
    edges_within.push_back(static_cast<int64_t>(senders.size()));
  }
  edge_nodes.assign(senders.begin(), senders.end());
  edge_nodes.insert(edge_nodes.end(), receivers.begin(), receivers.end());
  return count;
}

