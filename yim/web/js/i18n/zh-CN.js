// 简体中文: English text (as written in the t()/tn() call) -> Chinese. For tn() the key is
// the English plural form. Keep {placeholders} unchanged; group entries by view.
export const ZH_CN = {
  // Data export: "Download my data" (Settings) and "Export data" (Admin)
  "Your data": "我的数据",
  "Download my data": "下载我的数据",
  "One zip file with your profile, devices, friends, groups, the messages you can see and their files. A long history takes a while before the download starts.":
    "一个 zip 文件，包含你的资料、设备、好友、群组、你能看到的消息及其文件。聊天记录很长时，下载要过一会儿才开始。",
  "Saved {name}.": "已保存 {name}。",
  "Export the data of {label}?": "导出 {label} 的数据？",
  "A zip file with everything {username} can see: profile, devices, friends, groups, messages and their files. The export is kept in the audit log. Hand it only to the account's owner, or as the law requires.":
    "一个 zip 文件，包含 {username} 能看到的一切：资料、设备、好友、群组、消息及其文件。此次导出会记入审计日志。只交给账号本人，或依法提供。",
  Export: "导出",
  "Export data…": "导出数据…",
  "The server is building other exports right now. Try again in a minute.": "服务器正在生成其他导出，请一分钟后再试。",
};
