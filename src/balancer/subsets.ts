// Subsets of a service's endpoints, the unit routes split traffic over (src/sidecar/routes.ts): the
// endpoints that share a version label. A route picks the subset first; the service's balancer then
// picks an endpoint within it by leaving out every endpoint outside it, as it leaves out those a
// request already tried, so latency estimates, ejections and pending counts stay per endpoint.

/** A subset label: what a Kubernetes label value may be (1-63 of A-Z a-z 0-9 . _ -, alphanumeric at both ends). */
const subsetLabel = /^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$/

export const isSubsetLabel = (text: string): boolean => subsetLabel.test(text)

/**
 * The most subsets (distinct version labels) a service has. A route splits traffic over a few
 * versions (v1, v2, a canary); each subset costs a set of the endpoints outside it, so a service whose
 * endpoints each announce a version of their own (any host on an mDNS link can) would cost the
 * square of its endpoints on every update: 1,000 of them, 366 ms and 26 MB.
 */
export const MaxSubsetsPerService = 16

/**
 * Per subset, the ids of the endpoints outside it. Endpoints without a label belong to no subset;
 * nor do those whose label is not among the first MaxSubsetsPerService labels, in the order listed
 * (the endpoint registry works those out per request).
 */
export const subsetExclusions = (members: ReadonlyArray<{ readonly id: string; readonly subset: string | undefined }>): ReadonlyMap<string, ReadonlySet<string>> => {
  const subsets = new Set<string>()
  for (const member of members) if (member.subset !== undefined && subsets.size < MaxSubsetsPerService) subsets.add(member.subset)
  const exclusions = new Map<string, ReadonlySet<string>>()
  for (const subset of subsets) exclusions.set(subset, new Set(members.filter((member) => member.subset !== subset).map((member) => member.id)))
  return exclusions
}

/** What a pick leaves out: the endpoints outside the subset and those already tried. */
export const leftOut = (outside: ReadonlySet<string>, tried: ReadonlySet<string> | undefined): ReadonlySet<string> =>
  tried === undefined || tried.size === 0 ? outside : new Set([...outside, ...tried])
