// Subsets of a service's endpoints, the unit routes split traffic over (src/sidecar/routes.ts): the
// endpoints that share a version label. A route picks the subset first; the service's balancer then
// picks an endpoint within it by leaving out every endpoint outside it, as it leaves out those a
// request already tried, so latency estimates, ejections and pending counts stay per endpoint.

/** A subset label: what a Kubernetes label value may be (1-63 of A-Z a-z 0-9 . _ -, alphanumeric at both ends). */
const subsetLabel = /^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$/

export const isSubsetLabel = (text: string): boolean => subsetLabel.test(text)

/** Per subset, the ids of the endpoints outside it. Endpoints without a label belong to no subset. */
export const subsetExclusions = (members: ReadonlyArray<{ readonly id: string; readonly subset: string | undefined }>): ReadonlyMap<string, ReadonlySet<string>> => {
  const subsets = new Set<string>()
  for (const member of members) if (member.subset !== undefined) subsets.add(member.subset)
  const exclusions = new Map<string, ReadonlySet<string>>()
  for (const subset of subsets) exclusions.set(subset, new Set(members.filter((member) => member.subset !== subset).map((member) => member.id)))
  return exclusions
}

/** What a pick leaves out: the endpoints outside the subset and those already tried. */
export const leftOut = (outside: ReadonlySet<string>, tried: ReadonlySet<string> | undefined): ReadonlySet<string> =>
  tried === undefined || tried.size === 0 ? outside : new Set([...outside, ...tried])
