// Drives part of the flow from the generated TypeScript client (gen/ts) over gRPC with
// @connectrpc/connect-node, proving the contracts work outside Go. Run by
// integration/ts_client_test.go as:
//   tsx client.ts <risk addr> <compliance addr> <device id> <alert id>
// It prints one JSON line with what it saw.
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { Platform, RiskLevel, Severity } from "../../gen/ts/condaccess/common/v1/common_pb";
import { DeviceService } from "../../gen/ts/condaccess/compliance/v1/compliance_pb";
import { RiskService } from "../../gen/ts/condaccess/risk/v1/risk_pb";

async function main(): Promise<void> {
  const [riskAddr, complianceAddr, deviceId, alertId, group] = process.argv.slice(2);
  if (!riskAddr || !complianceAddr || !deviceId || !alertId) {
    throw new Error("usage: client.ts <risk addr> <compliance addr> <device id> <alert id> [group]");
  }
  const risk = createClient(RiskService, createGrpcTransport({ baseUrl: `http://${riskAddr}` }));
  const devices = createClient(DeviceService, createGrpcTransport({ baseUrl: `http://${complianceAddr}` }));

  const enrolled = await devices.enrollDevice({
    device: {
      deviceId,
      displayName: "Laptop enrolled from TypeScript",
      platform: Platform.MACOS,
      osVersion: "14.4.1",
      ownerUserId: "u-1",
      groups: group ? [group] : [],
    },
  });

  const reported = await risk.reportAlert({
    alert: { alertId, deviceId, severity: Severity.HIGH, title: "Malicious file opened (reported from TypeScript)", category: "Malware" },
  });
  const again = await risk.reportAlert({
    alert: { alertId, deviceId, severity: Severity.HIGH, title: "Malicious file opened (reported from TypeScript)", category: "Malware" },
  });
  const current = await risk.getDeviceRisk({ deviceId });

  // Validation happens before any handler: an empty alert id is INVALID_ARGUMENT.
  let invalidCode = "none";
  try {
    await risk.reportAlert({ alert: { alertId: "", deviceId, severity: Severity.HIGH, title: "x" } });
  } catch (e) {
    invalidCode = Code[ConnectError.from(e).code];
  }
  let notFoundCode = "none";
  try {
    await risk.getAlert({ alertId: "no-such-alert" });
  } catch (e) {
    notFoundCode = Code[ConnectError.from(e).code];
  }

  console.log(
    JSON.stringify({
      enrolledPlatform: Platform[enrolled.device?.platform ?? 0],
      created: reported.created,
      createdAgain: again.created,
      reportedRisk: RiskLevel[reported.deviceRisk?.level ?? 0],
      riskLevel: RiskLevel[current.deviceRisk?.level ?? 0],
      activeAlertIds: current.deviceRisk?.activeAlertIds ?? [],
      invalidCode,
      notFoundCode,
    }),
  );
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
