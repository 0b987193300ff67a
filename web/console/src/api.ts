// The console's only way to the server: the generated clients in gen/ts over the
// Connect protocol, served by the same process (vanguard over its grpc.Server).
import { createClient, ConnectError, Code, type Client } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-web";
import { timestampDate, type Timestamp } from "@bufbuild/protobuf/wkt";
import { RiskService } from "@gen/condaccess/risk/v1/risk_pb";
import { DeviceService, CompliancePolicyService, ComplianceService } from "@gen/condaccess/compliance/v1/compliance_pb";
import { AccessService, ConditionalAccessPolicyService, DirectoryService } from "@gen/condaccess/access/v1/access_pb";
import { RemediationService } from "@gen/condaccess/remediation/v1/remediation_pb";
import { AuditService } from "@gen/condaccess/audit/v1/audit_pb";
import type { TraceContext } from "@gen/condaccess/common/v1/common_pb";

const transport = createConnectTransport({ baseUrl: location.origin, useBinaryFormat: true });

export const risk: Client<typeof RiskService> = createClient(RiskService, transport);
export const devices: Client<typeof DeviceService> = createClient(DeviceService, transport);
export const compliancePolicies: Client<typeof CompliancePolicyService> = createClient(CompliancePolicyService, transport);
export const compliance: Client<typeof ComplianceService> = createClient(ComplianceService, transport);
export const access: Client<typeof AccessService> = createClient(AccessService, transport);
export const caPolicies: Client<typeof ConditionalAccessPolicyService> = createClient(ConditionalAccessPolicyService, transport);
export const directory: Client<typeof DirectoryService> = createClient(DirectoryService, transport);
export const remediation: Client<typeof RemediationService> = createClient(RemediationService, transport);
export const audit: Client<typeof AuditService> = createClient(AuditService, transport);

/** name turns a generated enum value into its short name ("NONCOMPLIANT"). */
export function name(e: Record<number, string>, v: number): string {
  return e[v] ?? String(v);
}

/** when formats a timestamp for a table cell. */
export function when(ts: Timestamp | undefined): string {
  if (!ts) return "–";
  return timestampDate(ts).toLocaleString();
}

export function date(ts: Timestamp | undefined): Date | undefined {
  return ts ? timestampDate(ts) : undefined;
}

/** traceId extracts the trace id from a W3C traceparent. */
export function traceId(tc: TraceContext | undefined): string {
  const parts = tc?.traceparent.split("-") ?? [];
  return parts.length >= 4 ? parts[1] : "";
}

/** errorText describes a failed call for the page. */
export function errorText(err: unknown): string {
  const e = ConnectError.from(err);
  if (e.code === Code.Unauthenticated) {
    return "Not signed in: outside development mode this server answers the console only to a person signed in with the organization's identity provider (when the server is configured for it) or to a client certificate issued by its CA.";
  }
  return `${Code[e.code] ?? e.code}: ${e.rawMessage}`;
}

/** fail shows err in el as an error. */
export function fail(el: HTMLElement, err: unknown): void {
  el.className = "error";
  el.setAttribute("role", "alert");
  el.textContent = errorText(err);
}

export function isCode(err: unknown, code: Code): boolean {
  return ConnectError.from(err).code === code;
}

/** pages collects every page of a List call, up to max items. */
export async function pages<T>(fetch: (token: string) => Promise<{ items: T[]; next: string }>, max = 100000): Promise<T[]> {
  const out: T[] = [];
  let token = "";
  do {
    const r = await fetch(token);
    out.push(...r.items);
    token = r.next;
  } while (token !== "" && out.length < max);
  return out;
}
