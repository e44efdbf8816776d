//! Copy groups: union-find over the pairs of a scan.
//!
//! Two files are in one group when a chain of exact or near copies joins them. The root of
//! every set is its smallest file index, so group numbers depend only on the file order and
//! the pairs, never on the order in which the pairs are joined.

use super::matching::CopyPair;

/// Disjoint sets over `0..n` with path halving; the smaller index becomes the root.
struct UnionFind {
    parent: Vec<usize>,
}

impl UnionFind {
    fn new(n: usize) -> UnionFind {
        UnionFind {
            parent: (0..n).collect(),
        }
    }

    fn find(&mut self, mut x: usize) -> usize {
        while self.parent[x] != x {
            self.parent[x] = self.parent[self.parent[x]];
            x = self.parent[x];
        }
        x
    }

    fn union(&mut self, a: usize, b: usize) {
        let (ra, rb) = (self.find(a), self.find(b));
        let (lo, hi) = (ra.min(rb), ra.max(rb));
        self.parent[hi] = lo;
    }
}

/// The group number of each of `n` files: groups are numbered 0, 1, ... in the order of their
/// first (smallest-index) file; a file without copies is a group of its own.
///
/// ```
/// use fracture_data::audit::{copy_groups, CopyPair, Dihedral};
/// let pair = |a, b| CopyPair { a, b, exact: false, hamming: 0, correlation: 1.0, transform: Dihedral::IDENTITY };
/// // 0-3 and 3-4 chain into one group; 1 and 2 are alone.
/// assert_eq!(copy_groups(5, &[pair(3, 4), pair(0, 3)]), vec![0, 1, 2, 0, 0]);
/// ```
pub fn copy_groups(n: usize, pairs: &[CopyPair]) -> Vec<usize> {
    let mut uf = UnionFind::new(n);
    for p in pairs {
        uf.union(p.a, p.b);
    }
    let mut number = vec![usize::MAX; n];
    let mut next = 0;
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let root = uf.find(i);
        if number[root] == usize::MAX {
            number[root] = next;
            next += 1;
        }
        out.push(number[root]);
    }
    out
}
